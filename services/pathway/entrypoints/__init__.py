"""The pathway service's entrypoints: its Kafka handler, its HTTP blueprint, its commands."""
