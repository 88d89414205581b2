"""Checking and mapping vendor records to canonical events: pure functions over data, no I/O."""
