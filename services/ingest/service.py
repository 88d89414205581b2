"""Ingest flow: vendor record -> validate -> normalise -> (inbound log + outbox) in one transaction.

Accepted events go to the topic of canonical events, keyed by patient so each
patient's events stay ordered. Rejected records go to the dead-letter table and
topic with every reason, to be inspected and replayed (`forlop dlq`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, insert, select

from forlop import metrics
from forlop.config import Topics
from forlop.events import PathwayEvent
from forlop.logging import ctx
from forlop.storage import json_text, schema
from forlop.storage.bulk import among, insert_many
from services.ingest.boundary import RecordProblems, parse_record, value_problems
from services.ingest.normalise import RejectedEvent, parse_vendor_event
from services.ingest.validation import SOURCES, Problem, bounds

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """A vendor record as it arrived, with where it came from."""

    raw: bytes | str | dict
    origin: str  # "kafka:<topic>/<p>@<offset>", "http", "replay:<file>:<line>"
    key: str | None = None

    def text(self) -> str:
        if isinstance(self.raw, bytes):
            return self.raw.decode("utf-8", "replace")
        if isinstance(self.raw, str):
            return self.raw
        return json.dumps(self.raw, ensure_ascii=False)


@dataclass
class IngestResult:
    accepted: list[PathwayEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[InboundRecord, list[Problem]]] = field(default_factory=list)
    dead_letter_ids: list[int] = field(default_factory=list)


def check_record(source: str, record: InboundRecord) -> PathwayEvent:
    """Parse, validate and normalise one record; raise RejectedEvent with every problem.

    Whatever the record holds, the only exception is RejectedEvent (ValueError for an unknown
    source, a caller's mistake): first the boundary (size, encoding, JSON, depth, widths, NUL,
    lone surrogates: `boundary`), then the vendor schema and the checks after it (`validation`),
    then the mapping. Should the mapping still fail, that is a gap in the validation: the record
    is rejected as unprocessable, and logged, instead of stopping whoever called.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown event source {source!r}; expected one of {', '.join(SOURCES)}")
    limits = bounds(source)
    try:
        if not isinstance(record.raw, bytes | str):  # a parsed value (HTTP intake's), of whatever JSON type
            raw = record.raw
            problems = value_problems(raw, limits)
            if problems:
                raise RejectedEvent(problems)
        else:
            raw = parse_record(record.raw, limits)
        return parse_vendor_event(source, raw)
    except RejectedEvent:
        raise
    except RecordProblems as exc:
        raise RejectedEvent(exc.problems) from None
    except Exception as exc:
        log.warning("a record passed validation but could not be mapped", exc_info=True,
                    extra=ctx(source=source, origin=record.origin))
        raise RejectedEvent([Problem("$", "unprocessable",
                                     f"the record cannot be processed ({type(exc).__name__}); "
                                     "it is kept for inspection")]) from None


def check_records(source: str, records: Sequence[InboundRecord]) -> list[PathwayEvent | list[Problem]]:
    """`check_record` for each record: its event, or the problems that reject it (picklable, so a
    replay's worker process can check the next batch while the main process stores this one)."""
    out: list[PathwayEvent | list[Problem]] = []
    for record in records:
        try:
            out.append(check_record(source, record))
        except RejectedEvent as rejected:
            out.append(rejected.problems)
    return out


def canonical_event_record(event: PathwayEvent, topics: Topics) -> dict:
    """The outbox row that carries a canonical event to the pathway and messaging services."""
    return {
        "topic": topics.events,
        "record_key": event.patient.national_id,  # partition by patient: per-patient order
        "value": json_text(event.to_dict()),
        "headers": {"correlation-id": event.event_id, "source": event.source.value},
    }


def ingest(
    conn: Connection,
    source: str,
    records: Sequence[InboundRecord],
    now: datetime,
    topics: Topics,
    *,
    dead_letter: bool = True,
    forward: bool = True,
    checked: Sequence[PathwayEvent | list[Problem]] | None = None,
) -> IngestResult:
    """Store the effect of a batch of vendor records in the caller's transaction.

    `forward=False` (replay): the accepted events are not written to the outbox; the caller hands
    `result.accepted` to the pathway service in the same transaction. `checked`: what
    `check_records` gave for these records, when it ran before the transaction.
    """
    result = IngestResult()
    accepted: list[tuple[InboundRecord, PathwayEvent]] = []
    for record, outcome in zip(records, checked if checked is not None else check_records(source, records), strict=True):
        metrics.events_consumed.labels(source).inc()
        if isinstance(outcome, PathwayEvent):
            accepted.append((record, outcome))
            continue
        result.rejected.append((record, outcome))
        metrics.events_rejected.labels(source, outcome[0].rule).inc()
        if dead_letter:
            result.dead_letter_ids.append(_dead_letter(conn, source, record, outcome, now, topics))

    ids = [event.event_id for _, event in accepted]
    seen = set(
        conn.execute(select(schema.inbound_events.c.event_id).where(
            among(schema.inbound_events.c.event_id, ids, conn.dialect.name)))
        .scalars()
        .all()
    ) if ids else set()
    inbound_rows, outbox_rows = [], []
    for record, event in accepted:
        if event.event_id in seen:
            result.duplicates += 1
            metrics.events_duplicate.labels(source).inc()
            continue
        seen.add(event.event_id)
        inbound_rows.append(
            {
                "event_id": event.event_id,
                "source": source,
                "pathway_key": event.pathway_key,
                "received_at": now,
                "raw": record.text(),
            }
        )
        if forward:
            outbox_rows.append({**canonical_event_record(event, topics), "created_at": now})
        result.accepted.append(event)
        metrics.events_accepted.labels(source).inc()
        # The national id goes through the log filter, which masks it: a careless field cannot leak it.
        log.info("event accepted", extra={"correlation_id": event.event_id, **ctx(
            source=source, pathway=event.pathway_key, kind=event.kind.value, code=event.code,
            patient=event.patient.national_id)})
    insert_many(conn, schema.inbound_events, inbound_rows)
    insert_many(conn, schema.outbox, outbox_rows)
    return result


def _dead_letter(
    conn: Connection, source: str, record: InboundRecord, problems: list[Problem], now: datetime, topics: Topics
) -> int:
    reasons = [{"field": p.field, "rule": p.rule, "message": p.message} for p in problems]
    dl_id = conn.execute(
        insert(schema.dead_letters).values(
            source=source,
            origin=record.origin,
            record_key=record.key,
            raw=record.text(),
            reasons=reasons,
            status="open",
            received_at=now,
        )
    ).inserted_primary_key[0]
    conn.execute(
        insert(schema.outbox).values(
            topic=topics.dead_letter,
            record_key=record.key,
            value=json.dumps(
                {"id": dl_id, "source": source, "origin": record.origin, "reasons": reasons, "raw": record.text()},
                ensure_ascii=False,
            ),
            headers={"source": source, "dead-letter-id": str(dl_id)},
            created_at=now,
        )
    )
    metrics.dead_letter.labels(source).inc()
    log.warning("record dead-lettered", extra=ctx(source=source, origin=record.origin, rules=[p.rule for p in problems]))
    return int(dl_id)
