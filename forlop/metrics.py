"""Prometheus metrics, one registry per process; names are what the chart's alerts use."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Select, func, select

from forlop.storage import Store, schema

events_consumed = Counter("forlop_events_consumed", "Vendor events consumed", ["source"])
events_accepted = Counter("forlop_events_accepted", "Vendor events accepted", ["source"])
events_duplicate = Counter("forlop_events_duplicate", "Vendor events already seen (redeliveries)", ["source"])
events_rejected = Counter("forlop_events_rejected", "Vendor events rejected", ["source", "reason"])
dead_letter = Counter("forlop_dead_letter", "Records written to the dead-letter table", ["source"])
processing_seconds = Histogram(
    "forlop_processing_seconds",
    "Time to handle one consumed batch (a poll, of all its partitions), transaction included",
    ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
consumer_outage = Gauge("forlop_consumer_outage", "1 while a consumer backs off because the database or "
                        "broker is unavailable (nothing is dead-lettered meanwhile)", ["service"])
outbox_parked = Counter("forlop_outbox_parked", "Outbox records the broker will not accept (too large), moved "
                        "aside so the records behind them go out", ["topic"])
consumer_lag = Gauge("forlop_consumer_lag", "Records behind the end of the partition", ["topic", "partition"])
pathways = Gauge("forlop_pathways", "Pathways by EpisodeOfCare status", ["status"])
milestones_overdue = Gauge("forlop_milestones_overdue", "Open milestones past their adjusted deadline")
alerts_emitted = Counter("forlop_alerts_emitted", "Deadline alerts emitted", ["to_status"])
messages = Gauge("forlop_messages", "E-messages by status", ["status"])
dead_letters_open = Gauge("forlop_dead_letters_open", "Dead-letter records not yet replayed", ["source"])
messages_unacknowledged_oldest_age = Gauge(
    "forlop_messages_unacknowledged_oldest_age_seconds", "Age of the oldest sent message without a receipt"
)


def overdue_milestones_query() -> Select:
    """The overdue milestones of all pathways, summed over those that have any: the partial index
    ix_pathways_overdue, not a scan of every pathway (every process runs it every 15 s)."""
    p = schema.pathways
    return select(func.coalesce(func.sum(p.c.overdue_milestones), 0)).where(p.c.overdue_milestones > 0)


def refresh_gauges(store: Store, now: datetime) -> int:
    """Set the state gauges from the database (pathways, overdue milestones, messages)."""
    p, m, d = schema.pathways, schema.messages, schema.dead_letters
    with store.read() as conn:
        for source, n in conn.execute(
            select(d.c.source, func.count()).where(d.c.status != "replayed").group_by(d.c.source)
        ):
            dead_letters_open.labels(source).set(n)
        for status, n in conn.execute(select(p.c.episode_status, func.count()).group_by(p.c.episode_status)):
            pathways.labels(status).set(n)
        milestones_overdue.set(conn.execute(overdue_milestones_query()).scalar_one())
        for status, n in conn.execute(select(m.c.status, func.count()).group_by(m.c.status)):
            messages.labels(status).set(n)
        oldest = conn.execute(select(func.min(m.c.sent_at)).where(m.c.status == "sent")).scalar()
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            messages_unacknowledged_oldest_age.set(max(0.0, (now - oldest).total_seconds()))
        else:
            messages_unacknowledged_oldest_age.set(0)
    return 0
