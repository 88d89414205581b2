"""The pathway service's adapters: its tables in SQL (the repository, the bulk one of a replay, the FHIR resources)."""
