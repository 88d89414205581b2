"""The record boundary: raw bytes or text of one vendor record -> a JSON value within the bounds, or its problems.

Every record, from Kafka, HTTP or a replayed file, passes here before the JSON Schema. What a
schema validator, `json` or the database would otherwise meet as an exception (a 5,000-digit
number, nesting 100,000 deep, a lone surrogate, a NUL character, bytes that are not UTF-8, a
record larger than the broker takes) becomes a `Problem` naming the rule and, where it can, the
field. The bounds are data: the vendor schema's ``x-forlop-bounds`` (`RecordBounds.from_schema`).

orjson parses: it refuses what JSON cannot carry exactly (non-finite or out-of-range numbers,
lone surrogates, invalid UTF-8) and nesting past 1,024 levels, without recursion in Python. The
walk over the parsed value is iterative too, so no depth can exhaust the stack.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f]")
# How JSON text writes a NUL or another control character (orjson refuses them raw): where this is not
# found in a record's text, no string of it holds one, and the walk need not look at every string.
_ESCAPED_CONTROL = re.compile(rb"\\(?:u00[01]|[bf])")
# The integers a record may carry: what orjson reads and writes exactly (signed or unsigned 64-bit).
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class Problem:
    """One reason a record is rejected."""

    field: str  # dotted path into the record, e.g. "patient.nationalId"; "$" is the record itself
    rule: str  # the schema keyword (required, pattern, enum, type, ...) or a named check
    message: str


@dataclass(frozen=True, slots=True)
class RecordBounds:
    """The structural limits of one vendor record (the schema's ``x-forlop-bounds``)."""

    max_record_bytes: int
    max_depth: int  # containers inside containers: the record itself is depth 1
    max_items: int  # elements of any array
    max_properties: int  # members of any object
    max_string_length: int  # characters of any string or member name
    earliest_date: date
    latest_date: date

    @staticmethod
    def from_schema(vendor_schema: dict[str, Any]) -> RecordBounds:
        raw = vendor_schema["x-forlop-bounds"]
        return RecordBounds(
            max_record_bytes=int(raw["maxRecordBytes"]),
            max_depth=int(raw["maxDepth"]),
            max_items=int(raw["maxItems"]),
            max_properties=int(raw["maxProperties"]),
            max_string_length=int(raw["maxStringLength"]),
            earliest_date=date.fromisoformat(raw["earliestDate"]),
            latest_date=date.fromisoformat(raw["latestDate"]),
        )


class RecordProblems(ValueError):
    """A record that fails at the boundary; `problems` says why (at least one)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


def parse_record(raw: bytes | str, bounds: RecordBounds) -> Any:
    """The JSON value of one record's bytes or text; raises RecordProblems.

    The size is checked first (before any parse), then the encoding and the JSON, then the
    value's shape (`structure_problems`).
    """
    size = len(raw) if isinstance(raw, bytes) else _utf8_length(raw, bounds.max_record_bytes)
    if size > bounds.max_record_bytes:
        raise RecordProblems([Problem("$", "max-record-bytes",
                                      f"the record is larger than {bounds.max_record_bytes} bytes")])
    value = parse_json(raw)
    text = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    problems = structure_problems(value, bounds, text_clean=_ESCAPED_CONTROL.search(text) is None)
    if problems:
        raise RecordProblems(problems)
    return value


def value_problems(value: Any, bounds: RecordBounds) -> list[Problem]:
    """`structure_problems` of a value parsed already (HTTP intake's), and its size as JSON text."""
    try:
        text: bytes | None = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # the walk says why (a lone surrogate, a key that is no text)
        text = None
    problems = structure_problems(value, bounds, text_clean=text is not None and not _ESCAPED_CONTROL.search(text))
    if not problems and text is not None and len(text) > bounds.max_record_bytes:
        problems = [Problem("$", "max-record-bytes", f"the record is larger than {bounds.max_record_bytes} bytes")]
    return problems


def parse_json(raw: bytes | str) -> Any:
    """One JSON text -> its value; raises RecordProblems naming what is wrong and where."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if isinstance(raw, bytes):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise RecordProblems([Problem("$", "encoding", f"the record is not UTF-8 (byte {bad.start})")]) from None
        raise RecordProblems([json_problem(exc)]) from None


def json_problem(exc: orjson.JSONDecodeError) -> Problem:
    """What orjson's complaint means for a vendor, with its rule."""
    where = f"line {exc.lineno} column {exc.colno}"
    text = exc.msg
    if "depth limit" in text or "recursion" in text.lower():
        return Problem("$", "max-depth", f"nested deeper than JSON can be read here (at {where})")
    if "number" in text:
        return Problem("$", "number-range", f"a number out of range: {text} (at {where})")
    if "byte order mark" in text:
        return Problem("$", "json", "a byte order mark before the JSON text (RFC 8259: none in JSON on the wire)")
    if "surrogate" in text or "UTF-8" in text:
        return Problem("$", "unicode", f"not valid Unicode text: {text} (at {where})")
    if "control character" in text:
        return Problem("$", "control-character", f"a raw control character inside a string (at {where})")
    return Problem("$", "json", f"not valid JSON: {text} (at {where})")


def structure_problems(value: Any, bounds: RecordBounds, limit: int = 20, *, text_clean: bool = False) -> list[Problem]:
    """The ways a parsed value breaks the bounds (at most `limit`); empty when it is within them.

    Iterative (a value from a caller other than `parse_json` may be nested arbitrarily deep):
    each container is visited once, and nothing below the depth limit is looked at. `text_clean`:
    no string can hold a NUL or control character (its JSON text has no such escape), so a value
    whose shape is within the bounds (`_shape_ok`, the common case) needs no path-building walk.
    """
    if text_clean and _shape_ok(value, bounds):
        return []
    problems: list[Problem] = []
    stack: list[tuple[tuple[str, ...], Any, int]] = [((), value, 1)]
    while stack and len(problems) < limit:
        path, node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > bounds.max_depth:
            problems.append(Problem(_dotted(path), "max-depth",
                                    f"{_name(path)} is nested deeper than {bounds.max_depth} levels"))
            continue
        if isinstance(node, dict):
            if len(node) > bounds.max_properties:
                problems.append(Problem(_dotted(path), "max-properties",
                                        f"{_name(path)} has more than {bounds.max_properties} members"))
                continue
            for key, child in node.items():
                if not isinstance(key, str):  # only from a caller that built the value itself
                    problems.append(Problem(_dotted(path), "json", f"{_name(path)} has a member name that is not text"))
                    continue
                if (problem := _text_problem(key, (*path, _printable(key)), bounds, "member name")) is not None:
                    problems.append(problem)
                    continue
                stack.append(((*path, key), child, depth + 1))
        elif isinstance(node, list):
            if len(node) > bounds.max_items:
                problems.append(Problem(_dotted(path), "max-items",
                                        f"{_name(path)} has more than {bounds.max_items} elements"))
                continue
            stack.extend(((*path, str(i)), child, depth + 1) for i, child in enumerate(node))
        elif isinstance(node, str):
            if (problem := _text_problem(node, path, bounds, "text")) is not None:
                problems.append(problem)
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if not MIN_INTEGER <= node <= MAX_INTEGER:
                problems.append(Problem(_dotted(path), "number-range", f"{_name(path)} is a number out of range"))
        elif isinstance(node, float):
            if not math.isfinite(node):
                problems.append(Problem(_dotted(path), "number-range", f"{_name(path)} is not a finite number"))
        else:
            problems.append(Problem(_dotted(path), "json", f"{_name(path)} is not a JSON value"))
    problems.sort(key=lambda p: p.field)
    return problems


def _shape_ok(value: Any, bounds: RecordBounds) -> bool:
    """True when `value` is certainly within the bounds' depth, widths, string lengths and numbers."""
    longest = bounds.max_string_length
    stack: list[tuple[Any, int]] = [([value], 0)]  # the record inside a list of one, at depth 0
    while stack:
        node, depth = stack.pop()
        if depth > bounds.max_depth:
            return False
        if type(node) is dict:
            if len(node) > bounds.max_properties or any(type(k) is not str or len(k) > longest for k in node):
                return False
            children: Any = node.values()
        elif len(node) > bounds.max_items:
            return False
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is str:
                if len(child) > longest:
                    return False
            elif kind is int:
                if not MIN_INTEGER <= child <= MAX_INTEGER:
                    return False
            elif kind is float:
                if not math.isfinite(child):
                    return False
            elif child is not None and kind is not bool:
                return False
    return True


def date_problem(field: str, day: date, bounds: RecordBounds, value: str) -> Problem | None:
    """A date (of a date or a time) outside the bounds: before 1900 or after 2100 no pathway event happens,
    and a year such as 0001 or 9999 turned into UTC overflows."""
    if bounds.earliest_date <= day <= bounds.latest_date:
        return None
    return Problem(field, "date-range",
                   f"{field} {value!r} is outside {bounds.earliest_date.isoformat()} to {bounds.latest_date.isoformat()}")


def _text_problem(text: str, path: tuple[str, ...], bounds: RecordBounds, what: str) -> Problem | None:
    if len(text) > bounds.max_string_length:
        return Problem(_dotted(path), "max-string-length",
                       f"{_name(path)}: {what} longer than {bounds.max_string_length} characters")
    if "\x00" in text:
        return Problem(_dotted(path), "nul-character", f"{_name(path)}: {what} holds a NUL character (\\u0000)")
    if _CONTROL.search(text):  # FHIR strings, and most of what reads them, allow tab, line feed and return only
        return Problem(_dotted(path), "control-character", f"{_name(path)}: {what} holds a control character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return Problem(_dotted(path), "unicode", f"{_name(path)}: {what} holds a lone surrogate (not Unicode text)")
    return None


def _utf8_length(text: str, cap: int) -> int:
    """The UTF-8 size of `text`, or more than `cap` (without encoding it) when that is certain."""
    if len(text) > cap:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _printable(key: str) -> str:
    """A member name as it may appear in a field path: bounded, without control characters."""
    short = key if len(key) <= 64 else key[:64] + "…"
    return "".join(ch if ch.isprintable() else "?" for ch in short)


def _dotted(path: tuple[str, ...]) -> str:
    shown = [_printable(p) for p in path[:16]]
    return ".".join(shown) + (".…" if len(path) > 16 else "") if path else "$"


def _name(path: tuple[str, ...]) -> str:
    return "the record" if not path else _dotted(path)

