"""Pathway rule sets as data: one JSON file per pathway type, versioned by the date they take effect."""
