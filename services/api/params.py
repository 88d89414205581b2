"""FHIR search requests as the API reads them: bounded, each parameter checked.

Every parameter a search reads is checked here; a bad one is a `BadParameter` (`forlop.http`, with
the strict number and single-value rules every route shares), which the app answers with a 400
OperationOutcome naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

from werkzeug.datastructures import MultiDict

from forlop.config import Settings
from forlop.http import INT32_MAX, BadParameter, one_value, shown, whole_number
from forlop.storage import schema

MAX_COUNT = 500  # resources on one search page; a larger _count gives this many (FHIR lets a server give fewer)
DEFAULT_COUNT = 50
TOTAL_MODES = ("none", "estimate", "accurate")  # FHIR _total; only "accurate" counts every match
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # FHIR R4's id; a _cursor is the id of the last resource of a page
# The longest search value that can match: the index keeps the first 300 characters of each.
MAX_VALUE_LENGTH = schema.fhir_search_index.c.value.type.length
CONTROL_PARAMS = ("_count", "_offset", "_cursor", "_total", "_format", "_lastUpdated", "_sort")
DATE_PREFIXES = ("gt", "ge", "lt", "le", "eq")  # FHIR date prefixes served (ne, sa, eb, ap are not)
SORTS = ("_lastUpdated",)  # _sort keys (a "-" before one: descending); forlop indexes no other date
HISTORY_PARAMS = ("_since", "_count", "_cursor", "_format")
CHAINED = {"patient:identifier": "patient.identifier", "patient.identifier": "patient.identifier"}


@dataclass(frozen=True, slots=True)
class SearchLimits:
    max_values: int  # comma-separated values in one search parameter
    max_repeats: int  # repetitions of one search parameter (each is ANDed)
    max_offset: int

    @staticmethod
    def of(settings: Settings) -> SearchLimits:
        return SearchLimits(settings.api_max_search_values, settings.api_max_search_repeats, settings.api_max_offset)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    criteria: list[tuple[str, list[str]]]  # (parameter, its values: OR); the criteria are ANDed
    count: int
    offset: int
    cursor: str | None
    total_mode: str
    echoed: list[tuple[str, str]]  # the query as given, less _offset: what the page links repeat
    updated: list[tuple[str, datetime]]  # _lastUpdated as bounds: (">=" or "<", an instant in UTC), ANDed
    sort: str | None = None  # "_lastUpdated" or "-_lastUpdated"; None: by id


def search_request(resource_type: str, supported: Iterable[str], args: MultiDict[str, str],
                   limits: SearchLimits, *, references: Iterable[str] = ()) -> SearchRequest:
    """A FHIR search's query, checked and bounded; raises BadParameter naming the first bad parameter.

    Past the limits (repetitions of a parameter, values in one, a value's length) the search is
    refused (400), never run: each value is a probe of the index. Within them, identical
    repetitions (ANDed) count once, and so do repeated values of one (ORed).

    Besides the type's parameters (`supported`): `_id` (resource ids), `<reference>:missing=true|false`
    on the `references` parameters; no other modifier. A token parameter's value is code, system|code,
    |code (no system) or system| (any code of the system): the index holds the first three as they are.
    """
    supported, references = tuple(supported), tuple(references)
    count, offset, cursor, total_mode = DEFAULT_COUNT, 0, None, "none"
    if (raw := one_value(args, "_count")) is not None:
        count = min(MAX_COUNT, whole_number("_count", raw, 0, INT32_MAX))
    if (raw := one_value(args, "_offset")) is not None:
        offset = whole_number("_offset", raw, 0, limits.max_offset)
    if (raw := one_value(args, "_cursor")) is not None:
        if not FHIR_ID.fullmatch(raw):
            raise BadParameter("_cursor", f"_cursor={shown(raw)} is not a paging position from a next link")
        cursor = raw
    if (raw := one_value(args, "_total")) is not None:
        if raw not in TOTAL_MODES:
            raise BadParameter("_total", f"_total={shown(raw)}: use one of {', '.join(TOTAL_MODES)}")
        total_mode = raw
    if len(args.getlist("_lastUpdated")) > MAX_DATE_BOUNDS:
        raise BadParameter("_lastUpdated", f"_lastUpdated is given more than {MAX_DATE_BOUNDS} times (a range "
                           "takes two)", "too-costly")
    updated = [bound for value in dict.fromkeys(args.getlist("_lastUpdated"))
               for bound in date_bounds("_lastUpdated", value)]
    sort = None
    if (raw := one_value(args, "_sort")) is not None:
        if raw.lstrip("-") not in SORTS or raw.startswith("--"):
            raise BadParameter("_sort", f"_sort={shown(raw)}: sort by one of {', '.join(SORTS)} (a '-' before it: "
                               "newest first)", "not-supported")
        sort = raw
    criteria: list[tuple[str, list[str]]] = []
    for name in args:
        if name in CONTROL_PARAMS:
            continue
        param = CHAINED.get(name, name) if resource_type == "EpisodeOfCare" else name
        base, _, modifier = name.partition(":")
        if modifier == "missing" and base in references:
            raw = one_value(args, name)
            if raw not in ("true", "false"):
                raise BadParameter(name, f"{name}={shown(str(raw))}: use true or false")
            criteria.append((name, [raw]))
            continue
        if modifier and param not in supported:
            raise BadParameter(name, f"{name!r}: modifier :{modifier} is not supported on {base!r} (supported: "
                               ":missing on the reference parameters, :identifier on EpisodeOfCare's patient)",
                               "not-supported")
        if param == "_id":
            for value in args.getlist(name):
                bad = next((v for v in value.split(",") if v and not FHIR_ID.fullmatch(v)), None)
                if bad is not None:
                    raise BadParameter(name, f"_id={shown(bad)} is not a resource id")
        elif param not in supported:
            names = [p for p in supported if p != "patient.identifier"]
            names += ["patient:identifier"] if resource_type == "EpisodeOfCare" else []
            raise BadParameter(
                name, f"search parameter {name!r} is not supported on {resource_type}; supported: "
                f"{', '.join(names + ['_id'] + list(CONTROL_PARAMS[:4]))}", "not-supported")
        given = args.getlist(name)
        if len(given) > limits.max_repeats:
            raise BadParameter(name, f"search parameter {name!r} is given {len(given)} times; at most "
                               f"{limits.max_repeats}", "too-costly")
        for value in given:
            parts = value.split(",")
            if len(parts) > limits.max_values:
                raise BadParameter(name, f"search parameter {name!r} has {len(parts)} comma-separated values; at "
                                   f"most {limits.max_values} (search in several requests)", "too-costly")
            if any(len(v) > MAX_VALUE_LENGTH for v in parts):
                raise BadParameter(name, f"a value of search parameter {name!r} is longer than {MAX_VALUE_LENGTH} "
                                   "characters: no resource has one")
        # identical repetitions (ANDed) mean one; the values of one are ORed: their order and repeats are moot
        repetitions = list(dict.fromkeys(tuple(sorted({v for v in value.split(",") if v})) for value in given))
        criteria += [(param, list(r)) for r in repetitions]
    echoed = [(k, v) for k in args if k != "_offset" for v in args.getlist(k)]
    return SearchRequest(criteria, count, offset, cursor, total_mode, echoed, updated, sort)


# The date values served, as patterns the OpenAPI document states too (a value the pattern takes is
# accepted, one it does not is a 400): years 1900-2099, only days that exist, a time only with an offset.
_YEAR = "(19[0-9]{2}|20[0-9]{2})"
_DAY = (f"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
        "|02-(0[1-9]|1[0-9]|2[0-8]))|(19([2468][048]|[13579][26]|0[48])|20([02468][048]|[13579][26]))-02-29)")
_TZ = "(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)"
_HM = "T([01][0-9]|2[0-3]):[0-5][0-9]"
DATE_PATTERN = f"(gt|ge|lt|le|eq)?({_YEAR}(-(0[1-9]|1[0-2]))?|{_DAY}({_HM}(:[0-5][0-9](\\.[0-9]{{1,6}})?)?{_TZ})?)"
INSTANT_PATTERN = f"{_DAY}{_HM}:[0-5][0-9](\\.[0-9]{{1,6}})?{_TZ}"  # _since: a Bundle's meta.lastUpdated
HISTORY_CURSOR_PATTERN = f"{_DAY}{_HM}:[0-5][0-9]\\.[0-9]{{6}}Z_[A-Za-z0-9.-]{{1,64}}_[1-9][0-9]{{0,8}}"
MAX_DATE_BOUNDS = 2  # _lastUpdated given at most twice (a range)
_DATE = re.compile(r"(?P<y>[0-9]{4})(-(?P<m>[0-9]{2})(-(?P<d>[0-9]{2})(T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})"
                   r"(:(?P<S>[0-9]{2})(\.(?P<f>[0-9]{1,6}))?)?(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?")


def instant_range(name: str, raw: str) -> tuple[datetime, datetime]:
    """The instants a FHIR date value covers at its precision, [start, end), in UTC: 2026 is the year,
    2026-01-05T10:00+01:00 that minute. A value without an offset is read as UTC."""
    match = _DATE.fullmatch(raw)
    if match is None or re.fullmatch(DATE_PATTERN, raw) is None:
        raise BadParameter(name, f"{name}={shown(raw)} is not a FHIR date or dateTime (e.g. 2026-01-05 or "
                           "2026-01-05T10:00:00Z)")
    g = match.groupdict()
    try:
        tz = UTC if g["tz"] in (None, "Z") else datetime.strptime(g["tz"].replace(":", ""), "%z").tzinfo
        start = datetime(int(g["y"]), int(g["m"] or 1), int(g["d"] or 1), int(g["H"] or 0), int(g["M"] or 0),
                         int(g["S"] or 0), int((g["f"] or "0").ljust(6, "0")), tzinfo=tz)
        if g["f"]:
            end = start + timedelta(microseconds=10 ** (6 - len(g["f"])))
        elif g["S"]:
            end = start + timedelta(seconds=1)
        elif g["M"]:
            end = start + timedelta(minutes=1)
        elif g["d"]:
            end = start + timedelta(days=1)
        elif g["m"]:
            end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
    except (ValueError, OverflowError) as exc:
        raise BadParameter(name, f"{name}={shown(raw)} is not a date that exists") from exc
    return start.astimezone(UTC), end.astimezone(UTC)


def date_bounds(name: str, raw: str) -> list[tuple[str, datetime]]:
    """A date search value with its prefix as bounds on an instant: gt and le the end of the value's
    range, ge and lt its start, eq (no prefix) both."""
    prefix, value = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
    if prefix not in DATE_PREFIXES or raw[2:3].isalpha():
        raise BadParameter(name, f"{name}={shown(raw)}: the prefix {prefix!r} is not supported; use one of "
                           f"{', '.join(DATE_PREFIXES)}", "not-supported")
    start, end = instant_range(name, value)
    return {"gt": [(">=", end)], "ge": [(">=", start)], "lt": [("<", start)], "le": [("<", end)],
            "eq": [(">=", start), ("<", end)]}[prefix]


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    since: datetime | None  # only versions at or after it (UTC)
    count: int
    cursor: tuple[datetime, str, int] | None  # the last entry of the page before: (lastUpdated, id, version)
    echoed: list[tuple[str, str]]  # _since and _count as given: what the next link repeats


def history_request(args: MultiDict[str, str]) -> HistoryRequest:
    """A `_history` request's query: `_since` (an instant), `_count`, and `_cursor` from a next link."""
    for name in args:
        if name not in HISTORY_PARAMS:
            raise BadParameter(name, f"parameter {name!r} is not supported on _history; supported: "
                               f"{', '.join(HISTORY_PARAMS[:3])}", "not-supported")
    since = None
    if (raw := one_value(args, "_since")) is not None:
        if re.fullmatch(INSTANT_PATTERN, raw) is None:
            raise BadParameter("_since", f"_since={shown(raw)} must be an instant with an offset (e.g. "
                               "2026-01-05T10:00:00Z), as a Bundle's meta.lastUpdated gives it")
        since = instant_range("_since", raw)[0]
    count = DEFAULT_COUNT
    if (raw := one_value(args, "_count")) is not None:
        count = min(MAX_COUNT, whole_number("_count", raw, 1, INT32_MAX))
    cursor = None
    if (raw := one_value(args, "_cursor")) is not None:
        cursor = _history_cursor(raw)
    echoed = [(k, v) for k in ("_since", "_count", "_format") for v in args.getlist(k)]
    return HistoryRequest(since, count, cursor, echoed)


def history_cursor(last_updated: datetime, resource_id: str, version_id: int) -> str:
    """The paging position after a history entry, as a next link carries it."""
    return f"{last_updated.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}_{resource_id}_{version_id}"


def _history_cursor(raw: str) -> tuple[datetime, str, int]:
    if re.fullmatch(HISTORY_CURSOR_PATTERN, raw) is None:
        raise BadParameter("_cursor", f"_cursor={shown(raw)} is not a paging position from a next link")
    at, resource_id, version = raw.split("_")
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC), resource_id, int(version)


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def none_match(header: str | None, version_id: int) -> bool:
    """If-None-Match names this version (weakly compared, as for a GET: W/"3" and "3" alike) or is *."""
    if not header:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == f'"{version_id}"' for tag in tags)


def not_modified_since(header: str | None, last_updated: datetime) -> bool:
    """If-Modified-Since (an HTTP date, whole seconds) at or after the resource's last change. An
    unreadable date is ignored, as HTTP says."""
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False  # HTTP dates are GMT; a date without its zone is not one
    return last_updated.astimezone(UTC).replace(microsecond=0) <= since


def http_date(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=True)
