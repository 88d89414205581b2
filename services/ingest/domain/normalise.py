"""The vendor-facing door: request bodies -> records -> validated canonical events.

`parse_vendor_event` validates a record (every problem, see `validation`) and maps it
with the vendor's mapping (`dips`, `esp`).

**The canonical moment of an event** ([decision]). DIPS sends a timestamp with each
event (``eventTime``) and, on a form, the date it records (``document.date``); eSP sends
only the date for a pathway code, and no clinical time at all for a deletion or a missed
appointment. So that the same fact gives the same event whichever system sent it, both
mappings use the moment both can know:

- pathway code: 00:00 Europe/Oslo on the registered date (DIPS ``eventTime`` kept in
  ``extra``);
- withdrawal: when it was recorded;
- appointment change: the original appointment time;
- stay events and consent: their own time.

The effect on ordering is deliberate: a registration sorts before anything timed on
the same day. So consent given on the day of a clinical decision does not cover that
decision (DOMAIN §5: nothing goes to the municipality unless consent was demonstrably
in force; the contracts' PHBU example depends on it), while consent given on an earlier
day does. The cost, accepted: consent withdrawn during the day of a decision still
counts for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson

from forlop.events import PathwayEvent
from services.ingest.domain import dips, esp
from services.ingest.domain.boundary import json_problem
from services.ingest.domain.validation import Problem, validate

_MAPPINGS: dict[str, Callable[[dict[str, Any]], PathwayEvent]] = {"dips": dips.normalise, "esp": esp.normalise}
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
JSON_TYPES = ("application/json", "text/json")


class RejectedEvent(Exception):
    """A vendor record that cannot be accepted, with every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems) or "rejected")
        self.problems = problems


class BodyError(ValueError):
    """The request body is not JSON, a JSON array or NDJSON; the message says where."""


class TooManyRecords(BodyError):
    """The request body holds more records than one request may carry."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body holds more than {limit} records; send at most {limit} per request")
        self.limit = limit


def parse_vendor_event(source: str, raw: object) -> PathwayEvent:
    """Validate one vendor record and map it to the canonical event.

    Raises RejectedEvent with all problems; ValueError for an unknown source.
    """
    if source not in _MAPPINGS:
        raise ValueError(f"unknown event source {source!r}; expected one of {', '.join(_MAPPINGS)}")
    problems = validate(source, raw)
    if problems:
        raise RejectedEvent(problems)
    return _MAPPINGS[source](cast(dict[str, Any], raw))  # validate() demands an object


def parse_body(content_type: str, body: bytes, *, max_records: int | None = None) -> list[object]:
    """The records in a request body: one JSON object, a JSON array, or NDJSON.

    NDJSON (``application/x-ndjson``): one JSON value per line (lines end at ``\\n`` only: JSON text
    may hold U+2028), blank lines skipped. An empty body holds no records. Raises BodyError naming
    the line of bad JSON, TooManyRecords past `max_records` (counted before any record is parsed
    in NDJSON). orjson parses: no number, nesting or escape can raise anything else (see
    `services.ingest.domain.boundary`).
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if body.startswith(b"\xef\xbb\xbf"):  # a byte order mark, which orjson refuses
        body = body[3:]
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the body is not UTF-8 (byte {exc.start})") from None
    if media_type in NDJSON_TYPES:
        lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
        if max_records is not None and len(lines) > max_records:
            raise TooManyRecords(max_records)
        items: list[object] = []
        for number, line in lines:
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise BodyError(f"line {number}: {_reason(exc)} (column {exc.colno})") from None
        return items
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise BodyError(f"unsupported content type {media_type!r}; send application/json or application/x-ndjson")
    if not body.strip():
        return []
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        several = exc.msg.startswith("unexpected content after document")
        hint = " (several JSON values: send them as application/x-ndjson)" if several else ""
        raise BodyError(f"line {exc.lineno}: {_reason(exc)} (column {exc.colno}){hint}") from None
    if isinstance(value, list):
        if max_records is not None and len(value) > max_records:
            raise TooManyRecords(max_records)
        return value
    if isinstance(value, dict):
        return [value]
    raise BodyError(f"expected a JSON object or an array of objects, got {type(value).__name__}")


def _reason(exc: orjson.JSONDecodeError) -> str:
    """orjson's complaint, less the position (the caller says where)."""
    problem = json_problem(exc)
    return problem.message.rsplit(" (at line", 1)[0]
