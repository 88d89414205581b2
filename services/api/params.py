"""FHIR search requests as the API reads them: bounded, each parameter checked.

Every parameter a search reads is checked here; a bad one is a `BadParameter` (`forlop.http`, with
the strict number and single-value rules every route shares), which the app answers with a 400
OperationOutcome naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

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
CONTROL_PARAMS = ("_count", "_offset", "_cursor", "_total", "_format")
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


def search_request(resource_type: str, supported: Iterable[str], args: MultiDict[str, str],
                   limits: SearchLimits) -> SearchRequest:
    """A FHIR search's query, checked and bounded; raises BadParameter naming the first bad parameter.

    Past the limits (repetitions of a parameter, values in one, a value's length) the search is
    refused (400), never run: each value is a probe of the index. Within them, identical
    repetitions (ANDed) count once, and so do repeated values of one (ORed).
    """
    supported = tuple(supported)
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
    criteria: list[tuple[str, list[str]]] = []
    for name in args:
        if name in CONTROL_PARAMS:
            continue
        param = CHAINED.get(name, name) if resource_type == "EpisodeOfCare" else name
        if param not in supported:
            names = [p for p in supported if p != "patient.identifier"]
            names += ["patient:identifier"] if resource_type == "EpisodeOfCare" else []
            raise BadParameter(
                name, f"search parameter {name!r} is not supported on {resource_type}; supported: "
                f"{', '.join(names + list(CONTROL_PARAMS[:4]))}", "not-supported")
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
    return SearchRequest(criteria, count, offset, cursor, total_mode, echoed)
