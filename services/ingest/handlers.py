"""Ingest flow: vendor record -> validate -> normalise -> (inbound log + outbox) in one unit of work.

Accepted events go to the topic of canonical events, keyed by patient so each
patient's events stay ordered. Rejected records go to the dead-letter table and
topic with every reason, to be inspected and replayed (`forlop dlq`).

An event id is accepted once. The same id again with the same content (a redelivery) is a
duplicate and changes nothing; with other content it is a conflicting duplicate, rejected (a
dead letter, or 409 over HTTP) rather than dropped: see `fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from forlop import metrics
from forlop.codec import json_text
from forlop.config import Topics
from forlop.dead_letters import DeadLetter
from forlop.events import PathwayEvent
from forlop.logging import ctx
from services.ingest.domain.boundary import RecordProblems, parse_record, value_problems
from services.ingest.domain.normalise import RejectedEvent, parse_vendor_event
from services.ingest.domain.validation import SOURCES, Problem, bounds
from services.ingest.ports import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """A vendor record as it arrived, with where it came from."""

    raw: bytes | str | dict | None  # None: a Kafka tombstone
    origin: str  # "kafka:<topic>/<p>@<offset>", "http", "replay:<file>:<line>"
    key: str | None = None
    # where a Kafka record was read, for its dead letter
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    headers: Mapping[str, str] | None = None

    def text(self) -> str:
        if isinstance(self.raw, bytes):
            return self.raw.decode("utf-8", "replace")
        if isinstance(self.raw, str):
            return self.raw
        return json.dumps(self.raw, ensure_ascii=False)

    def raw_bytes(self) -> bytes | None:
        """The record's bytes as they arrived (a parsed HTTP item as its JSON)."""
        if self.raw is None or isinstance(self.raw, bytes):
            return self.raw
        return self.text().encode("utf-8", "surrogatepass")


class ConflictingDuplicates(Exception):
    """Event ids accepted before with other content (raised to roll back an all-or-nothing request)."""

    def __init__(self, event_ids: Sequence[str]) -> None:
        super().__init__(", ".join(event_ids))
        self.event_ids = list(event_ids)


def fingerprint(record: InboundRecord) -> str:
    """sha256 of the vendor record in canonical JSON (keys sorted, no whitespace).

    Of the vendor record, not of the canonical PathwayEvent: it is what the vendor sent, so a
    release that normalises differently (a new field mapped, a code list change) does not turn a
    plain redelivery into a "conflict". Canonical, so a redelivery that differs only in key order,
    whitespace or escaping is a plain duplicate. Worked out from the record's text on every path
    (an HTTP item's too), so the same content gives the same fingerprint whichever way it came.
    orjson where it is exact (a fraction of the cost of json); json where orjson may have rounded (an
    integer beyond 64 bits becomes a float) or refuses (infinity, lone surrogates, deep nesting).
    Stored per event (`inbound_events.fingerprint`): changing this function makes every stored
    fingerprint incomparable (that needs a migration).
    """
    text = record.text()
    try:
        value = orjson.loads(text)
        if _maybe_rounded(value):
            raise ValueError("a number orjson may have read inexactly")
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (ValueError, TypeError):  # orjson.JSONDecodeError and JSONEncodeError among them
        try:
            canonical = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError):  # not JSON at all: its text is its content
            canonical = text.encode("utf-8", "surrogatepass")
    return hashlib.sha256(canonical).hexdigest()


def _maybe_rounded(value: object) -> bool:
    """Whether a parsed document holds a float that may be an integer beyond 64 bits, which orjson
    reads as a float (rounded). Decided on the value, not the text: the same content takes one path."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())  # type: ignore[union-attr]
        elif kind is list:
            stack.extend(item)  # type: ignore[arg-type]
        elif kind is float and abs(item) >= 2.0**63 and item.is_integer():  # type: ignore[union-attr, arg-type]
            return True
    return False
_ID_FIELD = {"dips": "eventId", "esp": "meldingsId"}  # the vendor's event id field, for the reason


@dataclass
class IngestResult:
    accepted: list[PathwayEvent] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[InboundRecord, list[Problem]]] = field(default_factory=list)
    dead_letter_ids: list[int] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # event ids sent again with other content (also in `rejected`)


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
    uow: UnitOfWork, source: str, records: Sequence[InboundRecord], now: datetime, topics: Topics, *,
    dead_letter: bool = True,
) -> IngestResult:
    """Store the effect of a batch of vendor records in the caller's transaction: check each
    (`check_records`), keep the accepted ones and their dead letters (`accept`), and forward the
    accepted events to the pathway and messaging services through the outbox."""
    result = accept(uow, source, records, check_records(source, records), now, topics, dead_letter=dead_letter)
    forward(uow, result.accepted, now, topics)
    return result


def forward(uow: UnitOfWork, events: Sequence[PathwayEvent], now: datetime, topics: Topics) -> None:
    """The accepted events' outbox records, on the topic of canonical events."""
    uow.outbox.add([{**canonical_event_record(event, topics), "created_at": now} for event in events])


def accept(
    uow: UnitOfWork,
    source: str,
    records: Sequence[InboundRecord],
    outcomes: Sequence[PathwayEvent | list[Problem]],
    now: datetime,
    topics: Topics,
    *,
    dead_letter: bool = True,
) -> IngestResult:
    """Keep what checking the records gave (`outcomes`, as `check_records` gives them): each new
    accepted event in the inbound log, each rejected record (and each conflicting duplicate) as a
    dead letter unless `dead_letter` is False. Forwards nothing: `ingest` does (`forward`); a
    replay hands `result.accepted` to the pathway service in the same transaction."""
    result = IngestResult()
    accepted: list[tuple[InboundRecord, PathwayEvent]] = []
    for record, outcome in zip(records, outcomes, strict=True):
        metrics.events_consumed.labels(source).inc()
        if isinstance(outcome, PathwayEvent):
            accepted.append((record, outcome))
            continue
        result.rejected.append((record, outcome))
        metrics.events_rejected.labels(source, outcome[0].rule).inc()
        if dead_letter:
            result.dead_letter_ids.append(_dead_letter(uow, source, record, outcome, now, topics))

    seen = _fingerprints(uow, [event.event_id for _, event in accepted])
    inbound_rows = []
    for record, event in accepted:
        content = fingerprint(record)
        if event.event_id in seen:
            if seen[event.event_id] == content:
                result.duplicates += 1
                metrics.events_duplicate.labels(source).inc()
                continue
            problem = Problem(_ID_FIELD.get(source, "eventId"), "conflicting-duplicate",
                              f"conflicting duplicate: event id {event.event_id} was accepted before with other "
                              "content; a change is a new event with an id of its own")
            result.conflicts.append(event.event_id)
            result.rejected.append((record, [problem]))
            metrics.events_rejected.labels(source, problem.rule).inc()
            if dead_letter:
                result.dead_letter_ids.append(_dead_letter(uow, source, record, [problem], now, topics))
            continue
        seen[event.event_id] = content
        inbound_rows.append(
            {
                "event_id": event.event_id,
                "source": source,
                "pathway_key": event.pathway_key,
                "received_at": now,
                "raw": record.text(),
                "fingerprint": content,
            }
        )
        result.accepted.append(event)
        metrics.events_accepted.labels(source).inc()
        # The national id goes through the log filter, which masks it: a careless field cannot leak it.
        log.info("event accepted", extra={"correlation_id": event.event_id, **ctx(
            source=source, pathway=event.pathway_key, kind=event.kind.value, code=event.code,
            patient=event.patient.national_id)})
    uow.inbound.add(inbound_rows)
    return result


def _fingerprints(uow: UnitOfWork, event_ids: list[str]) -> dict[str, str]:
    """The fingerprints of the events among `event_ids` accepted before; one stored before migration 10
    (no fingerprint) is worked out from its stored raw record."""
    if not event_ids:
        return {}
    stored = uow.inbound.fingerprints(event_ids)
    found = {eid: content for eid, content in stored.items() if content is not None}
    unknown = [eid for eid, content in stored.items() if content is None]
    if unknown:
        for event_id, raw in uow.inbound.raw_records(unknown).items():
            found[event_id] = fingerprint(InboundRecord(raw, "inbound_events"))
    return found


def _dead_letter(
    uow: UnitOfWork, source: str, record: InboundRecord, problems: list[Problem], now: datetime, topics: Topics
) -> int:
    reasons = [{"field": p.field, "rule": p.rule, "message": p.message} for p in problems]
    return uow.dead_letters.add(DeadLetter(
        stage="ingest", source=source, origin=record.origin, raw=record.raw_bytes(), reasons=reasons, key=record.key,
        topic=record.topic, partition=record.partition, offset=record.offset, headers=record.headers or {},
    ), now, topics.dead_letter)
