"""Messaging counters. forlop.metrics already has the `forlop_messages{status}` gauge (rows by status);
these count transitions, sends and receipts, so their names must not collide with it."""

from __future__ import annotations

from prometheus_client import Counter

transitions = Counter("forlop_message_transitions", "E-message status changes", ["status"])
sends = Counter("forlop_message_sends", "E-message hand-overs to the transport", ["transport", "outcome"])
apprecs = Counter("forlop_apprecs", "AppRecs received", ["status", "outcome"])
consent_flags = Counter(
    "forlop_message_sent_without_consent", "Sent messages found to lack consent in force (registered later)"
)
older_histories = Counter(
    "forlop_status_changes_older_history", "Status changes skipped: their history is older than one reconciled already"
)
