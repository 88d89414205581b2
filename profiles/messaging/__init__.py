"""Messaging data: which registrations owe which e-messages to whom (triggers.json), the demo address register."""
