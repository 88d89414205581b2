"""The ingest service's adapters: the inbound log and dead letters in SQL."""
