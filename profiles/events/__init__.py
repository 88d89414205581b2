"""JSON Schemas (draft 2020-12) of the vendor event formats forlop accepts."""
