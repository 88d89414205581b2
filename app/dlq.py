"""`forlop dlq replay`: a dead letter of any stage processed again, once its cause is fixed.

ingest: the raw record through the ingest flow (`services.ingest.dead_letters`). pathway,
messaging, receipts: the stored record through that consumer's handler, in one transaction with
marking the dead letter replayed. relay: the parked outbox row queued again (after the broker's or
producer's limit was raised). A record that fails again keeps its dead letter, with the new reason.
"""

from __future__ import annotations

from sqlalchemy import update

from app.bootstrap import Runtime
from forlop import dead_letters
from forlop.dead_letters import exception_reason
from forlop.failures import Failure, is_infrastructure
from forlop.kafka import Record
from forlop.storage import schema
from services.ingest.public import ReplayOutcome, replay_dead_letter

SERVICE_OF_STAGE = {"pathway": "pathway", "messaging": "messaging", "receipts": "messaging"}


def replay(rt: Runtime, dl_id: int) -> ReplayOutcome:
    """Replay one dead letter; raise KeyError when there is none with this id, and the error itself
    when the database is unavailable (then nothing is marked)."""
    with rt.store.read() as conn:
        row = dead_letters.get(conn, dl_id)
    if row["stage"] == "relay":
        return _requeue(rt, row)
    try:
        with rt.store.transaction() as conn:
            if row["stage"] == "ingest":
                return replay_dead_letter(conn, row, rt.clock(), rt.settings.topics)
            topic = rt.topic_of(row["stage"], row["source"])
            record = Record(
                topic, row["kafka_partition"] or 0, row["kafka_offset"] or 0,
                row["record_key"].encode() if row["record_key"] is not None else None,
                dead_letters.record_bytes(row), dict(row["headers"] or {}),
            )
            rt.topic_handlers([SERVICE_OF_STAGE[row["stage"]]])[topic](conn, [record])
            dead_letters.mark_replayed(conn, dl_id, rt.clock())
            return ReplayOutcome(dl_id, "replayed", [])
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        failure = Failure.of(exc)
        reasons = [exception_reason(failure, 1) | {"message": f"failed again on replay: {failure.summary(500)}"}]
        with rt.store.transaction() as conn:
            dead_letters.mark_failing(conn, dl_id, "still-failing", reasons, failure)
        return ReplayOutcome(dl_id, "still-failing", reasons)


def _requeue(rt: Runtime, row: dict) -> ReplayOutcome:
    """Queue a parked outbox row again: the relay sends it on its next pass (and parks it again,
    reopening this dead letter, if the broker still refuses it)."""
    o = schema.outbox
    with rt.store.transaction() as conn:
        requeued = conn.execute(update(o).where(o.c.id == row["outbox_id"], o.c.published_at.is_(None))
                                .values(parked_at=None, park_reason=None)).rowcount
        dead_letters.mark_replayed(conn, int(row["id"]), rt.clock())
    return ReplayOutcome(int(row["id"]), "requeued" if requeued else "replayed", [])
