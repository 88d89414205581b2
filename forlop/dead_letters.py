"""Dead letters of every stage: the records that could not be processed, kept to inspect and replay.

One table for all of them (`dead_letters`): ingest's rejections with every reason, and the
poison records any consumer isolated (ingest, pathway, messaging, receipts) or the outbox relay
parked (relay), with the exception that stopped them. Each keeps the record's bytes exactly, its
Kafka coordinates and headers. A dead letter is also published on the dead-letter topic, through
the outbox, in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from forlop import metrics
from forlop.failures import Failure
from forlop.logging import ctx
from forlop.storage import json_text, schema

log = logging.getLogger(__name__)

STAGES = ("ingest", "pathway", "messaging", "receipts", "relay")
UNRESOLVED = ("open", "still-rejected", "still-failing")  # what `dlq list` shows and `replay --all` replays
TEXT_LIMIT = 64 * 1024  # characters of the readable copy (`raw`); `raw_bytes` keeps every byte
TOPIC_RAW_LIMIT = 64 * 1024  # a larger record goes on the dead-letter topic without its content
_ORIGIN_LIMIT = 200  # the column's length


def readable(raw: bytes | None) -> str:
    """The record as text for people and for PostgreSQL (which stores no NUL in text): UTF-8 with
    undecodable bytes and NUL replaced, capped at TEXT_LIMIT characters."""
    if raw is None:
        return "(no value: a tombstone record)"
    text = raw[: TEXT_LIMIT * 4].decode("utf-8", "replace").replace("\x00", "\ufffd")
    if len(text) > TEXT_LIMIT or len(raw) > TEXT_LIMIT * 4:
        return f"{text[:TEXT_LIMIT]}… ({len(raw)} bytes in all: see raw_bytes)"
    return text


def _clean(value: str | None, limit: int | None = None) -> str | None:
    if value is None:
        return None
    cleaned = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return cleaned[:limit] if limit else cleaned


def exception_reason(failure: Failure, attempts: int) -> dict[str, str]:
    """The reason of a record that failed in a handler: the exception, and how often it was tried."""
    how = "twice the same way" if attempts == 2 else f"{attempts} times"
    return {"field": "$", "rule": "exception", "message": f"failed {how}: {failure.summary(500)}"}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    source: str  # the vendor for ingest, else the stage
    origin: str
    raw: bytes | None
    reasons: list[dict[str, str]]
    key: str | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: Failure | None = None
    outbox_id: int | None = None


def _existing(conn: Connection, letter: DeadLetter) -> Any:
    """The dead letter already written for this record (a redelivery after a crash before the offset
    commit, or the relay parking a re-queued row again), or None."""
    d = schema.dead_letters
    if letter.outbox_id is not None:
        query = select(d.c.id, d.c.raw_bytes).where(d.c.outbox_id == letter.outbox_id, d.c.stage == "relay")
    elif letter.topic is not None and letter.offset is not None:
        query = select(d.c.id, d.c.raw_bytes).where(
            d.c.topic == letter.topic, d.c.kafka_partition == letter.partition, d.c.kafka_offset == letter.offset,
            d.c.stage == letter.stage)
    else:
        return None
    for row in conn.execute(query.order_by(d.c.id.desc())):
        if row.raw_bytes == letter.raw:  # the same offset with other bytes: a topic made anew
            return row
    return None


def write(conn: Connection, letter: DeadLetter, now: datetime, dead_letter_topic: str) -> int:
    """Store a dead letter and its record on the dead-letter topic (outbox), in the caller's transaction.

    Idempotent per record: the same Kafka record (stage, topic, partition, offset, bytes) or parked
    outbox row is stored once; a parked row that fails again reopens its dead letter.
    """
    d = schema.dead_letters
    reasons = [{k: _clean(str(v), 2000) for k, v in r.items()} for r in letter.reasons]
    error = letter.error.to_dict() if letter.error else None
    if error:
        error["message"] = _clean(error["message"])
    existing = _existing(conn, letter)
    if existing is not None:
        if letter.outbox_id is not None:
            conn.execute(update(d).where(d.c.id == existing.id).values(
                status="still-failing", reasons=reasons, error=error))
        return int(existing.id)
    headers = {_clean(k, 200): _clean(v, 2000) for k, v in letter.headers.items()}
    dl_id = int(conn.execute(insert(d).values(
        stage=letter.stage,
        source=letter.source[:20],
        origin=_clean(letter.origin, _ORIGIN_LIMIT),
        record_key=_clean(letter.key, 1000),
        raw=readable(letter.raw),
        raw_bytes=letter.raw,
        reasons=reasons,
        error=error,
        topic=_clean(letter.topic, 255),
        kafka_partition=letter.partition,
        kafka_offset=letter.offset,
        headers=headers,
        outbox_id=letter.outbox_id,
        status="open",
        received_at=now,
    )).inserted_primary_key[0])
    body: dict[str, Any] = {
        "id": dl_id, "stage": letter.stage, "source": letter.source, "origin": letter.origin,
        "topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
        "reasons": reasons, "error": {"type": error["type"], "message": error["message"]} if error else None,
        "size": None if letter.raw is None else len(letter.raw),
        # the content only while it is small: a dead letter for a record too large to publish must not be one itself
        "raw": readable(letter.raw) if letter.raw is None or len(letter.raw) <= TOPIC_RAW_LIMIT else None,
    }
    conn.execute(insert(schema.outbox).values(
        topic=dead_letter_topic, record_key=_clean(letter.key, 1000), value=json_text(body),
        headers={"stage": letter.stage, "source": letter.source, "dead-letter-id": str(dl_id)}, created_at=now,
    ))
    metrics.dead_letter.labels(letter.source).inc()
    # No record content and no exception message in the log (either can carry personal data).
    log.warning("record dead-lettered", extra=ctx(
        stage=letter.stage, source=letter.source, origin=letter.origin, dead_letter=dl_id,
        rules=[r["rule"] for r in reasons], error=letter.error.type if letter.error else None))
    return dl_id


def list_dead_letters(
    conn: Connection, statuses: tuple[str, ...] | None = UNRESOLVED, stage: str | None = None, limit: int = 500,
) -> list[dict[str, Any]]:
    d = schema.dead_letters
    query = select(d).order_by(d.c.id).limit(limit)
    if statuses:
        query = query.where(d.c.status.in_(statuses))
    if stage:
        query = query.where(d.c.stage == stage)
    return [dict(row._mapping) for row in conn.execute(query)]


def get(conn: Connection, dl_id: int) -> dict[str, Any]:
    row = conn.execute(select(schema.dead_letters).where(schema.dead_letters.c.id == dl_id)).first()
    if row is None:
        raise KeyError(f"no dead letter with id {dl_id}")
    return dict(row._mapping)


def record_bytes(row: Mapping[str, Any]) -> bytes | None:
    """The dead letter's record as it arrived (a row from before migration 10 has its text only)."""
    if row.get("raw_bytes") is not None:
        return bytes(row["raw_bytes"])
    if row.get("topic") is not None and row.get("kafka_offset") is not None:
        return None  # a tombstone
    return row["raw"].encode("utf-8")


def mark_replayed(conn: Connection, dl_id: int, now: datetime) -> None:
    d = schema.dead_letters
    conn.execute(update(d).where(d.c.id == dl_id).values(status="replayed", replayed_at=now))


def mark_failing(conn: Connection, dl_id: int, status: str, reasons: list[dict[str, str]],
                 error: Failure | None = None) -> None:
    """Still failing after a replay: the new reason (and exception) replace the old."""
    d = schema.dead_letters
    values: dict[str, Any] = {"status": status, "reasons": [{k: _clean(str(v), 2000) for k, v in r.items()}
                                                            for r in reasons]}
    if error is not None:
        values["error"] = error.to_dict() | {"message": _clean(error.message)}
    conn.execute(update(d).where(d.c.id == dl_id).values(**values))

