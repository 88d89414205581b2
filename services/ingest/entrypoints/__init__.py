"""The ingest service's entrypoints: its Kafka handler."""
