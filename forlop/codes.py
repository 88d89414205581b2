"""The national pathway code list as data: which codes exist and what each registers.

A registration code is pathway type + event letter (+ outcome letter), e.g. ``D11CU``.
The list lives in ``profiles/codes/event-codes.json`` so a corrected code list is a
data change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class ParsedCode:
    code: str
    pathway_type: str
    letter: str
    event: str  # start | first-attendance | decision | evaluation | detox-completed | treatment-start | end
    outcome: str | None


class UnknownCode(ValueError):
    """The code is not on the code list; `rule` says which check failed."""

    def __init__(self, code: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.rule = rule


@dataclass(frozen=True)
class CodeList:
    pathway_types: dict[str, dict[str, Any]]
    events: dict[str, dict[str, Any]]
    code_system: str
    other_events_rank: int = 6  # the same-day rank of an event that is not a pathway code

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> CodeList:
        for letter, spec in doc["events"].items():
            if not isinstance(spec.get("sameDayRank"), int):
                raise ValueError(f"event {letter!r} of the code list has no sameDayRank")
        return cls(doc["pathwayTypes"], doc["events"], doc["codeSystem"], int(doc["otherEventsSameDayRank"]))

    def same_day_rank(self, code: str | None, pathway_type: str) -> int:
        """Where a registration comes among those of the same day: pathway order (start before first
        attendance before decision ...), by the event letter of `code` in `pathway_type`; an event that
        is not a pathway code, or a code not of this pathway type, ranks `other_events_rank`."""
        if not code or not code.startswith(pathway_type):
            return self.other_events_rank
        spec = self.events.get(code[len(pathway_type):len(pathway_type) + 1])
        return spec["sameDayRank"] if spec else self.other_events_rank

    def parse(self, code: str, pathway_type: str | None = None) -> ParsedCode:
        """Parse a registration code; raise UnknownCode naming the rule it breaks.

        With ``pathway_type`` given, the code must belong to that pathway type.
        """
        prefix = next((t for t in sorted(self.pathway_types, key=len, reverse=True) if code.startswith(t)), None)
        if prefix is None:
            raise UnknownCode(code, "known-pathway-type", f"code {code!r} does not start with a known pathway type")
        if pathway_type is not None and prefix != pathway_type:
            raise UnknownCode(
                code, "code-matches-pathway-type", f"code {code!r} belongs to {prefix}, not to pathway type {pathway_type}"
            )
        rest = code[len(prefix):]
        if not rest or rest[0] not in self.events:
            raise UnknownCode(code, "known-event-code", f"code {code!r} has no known event letter after {prefix}")
        letter, outcome = rest[0], rest[1:] or None
        spec = self.events[letter]
        only_for = spec.get("pathwayTypes")
        if only_for and prefix not in only_for:
            raise UnknownCode(code, "code-matches-pathway-type", f"event {letter!r} is not used in pathway type {prefix}")
        allowed = spec.get("outcomes", [])
        if outcome is None and spec.get("outcomeRequired"):
            raise UnknownCode(code, "known-event-code", f"code {code!r} needs an outcome letter")
        if outcome is not None and allowed != "any" and (len(outcome) != 1 or outcome not in allowed):
            raise UnknownCode(code, "known-event-code", f"code {code!r} has an unknown outcome {outcome!r}")
        return ParsedCode(code, prefix, letter, spec["event"], outcome)

    def is_known_pathway_type(self, pathway_type: str) -> bool:
        return pathway_type in self.pathway_types


@cache
def code_list() -> CodeList:
    """The code list shipped in ``profiles/codes/event-codes.json``."""
    return CodeList.from_document(code_list_document())


def code_list_document() -> dict[str, Any]:
    return json.loads(resources.files("profiles").joinpath("codes/event-codes.json").read_text("utf-8"))
