"""Prometheus metrics, one registry per process; names are what the chart's alerts use."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

events_consumed = Counter("forlop_events_consumed", "Vendor events consumed", ["source"])
events_accepted = Counter("forlop_events_accepted", "Vendor events accepted", ["source"])
events_duplicate = Counter("forlop_events_duplicate", "Vendor events already seen (redeliveries)", ["source"])
events_rejected = Counter("forlop_events_rejected", "Vendor events rejected", ["source", "reason"])
dead_letter = Counter("forlop_dead_letter", "Records written to the dead-letter table", ["source"])
processing_seconds = Histogram(
    "forlop_processing_seconds",
    "Time to handle one consumed batch, transaction included",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
consumer_lag = Gauge("forlop_consumer_lag", "Records behind the end of the partition", ["topic", "partition"])
pathways = Gauge("forlop_pathways", "Pathways by EpisodeOfCare status", ["status"])
milestones_overdue = Gauge("forlop_milestones_overdue", "Open milestones past their adjusted deadline")
alerts_emitted = Counter("forlop_alerts_emitted", "Deadline alerts emitted", ["to_status"])
messages = Gauge("forlop_messages", "E-messages by status", ["status"])
messages_unacknowledged_oldest_age = Gauge(
    "forlop_messages_unacknowledged_oldest_age_seconds", "Age of the oldest sent message without a receipt"
)
