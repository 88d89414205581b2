"""The pathway service's adapters: SQL storage of its FHIR resources."""
