"""Message-trigger rules as data: which registration owes which message to whom, on what condition.

The rules live in ``profiles/messaging/triggers.json`` (versioned like the pathway rule sets:
a ``base`` and ``versions`` that take effect on a date and override it). The version in force
on the local date a trigger happened applies. Pathway codes are read through the code list
(``forlop.codes``), so a trigger names the code list's event ("decision"), never a letter.

Two gates decide whether a message to the municipality is owed (DOMAIN.md section 5):
``consent`` (the coordinator's Dialogmelding: without consent in force the message is kept,
suppressed) and ``municipalServices`` (the PLO logistics messages of an inpatient stay: owed
when the patient receives municipal services, whatever the consent; without them nothing is owed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

from forlop.codes import CodeList, UnknownCode, code_list
from forlop.events import EventKind, PathwayEvent
from services.messaging.domain.model import Role, Trigger


class Gate(StrEnum):
    """The condition a recipient rule's message is owed on (what each means: ``owed``)."""

    NONE = "none"
    CONSENT = "consent"  # consent to involve the municipality in force at the trigger; else suppressed
    MUNICIPAL_SERVICES = "municipalServices"  # the patient receives municipal services; else not owed


_CONDITIONS = frozenset({"outcomes", "treatmentPlanChanged"})


@dataclass(frozen=True, slots=True)
class RecipientRule:
    role: Role
    gate: Gate
    outcomes: frozenset[str] | None = None  # only for these decision outcomes
    treatment_plan_changed: bool | None = None  # only when the evaluation's flag is this

    def applies(self, ev: PathwayEvent, outcome: str | None) -> bool:
        if self.outcomes is not None and outcome not in self.outcomes:
            return False
        return self.treatment_plan_changed is None or bool(ev.treatment_plan_changed) is self.treatment_plan_changed


@dataclass(frozen=True, slots=True)
class TriggerRule:
    trigger: Trigger
    kind: EventKind
    event: str | None  # the code list's event of a pathway code ("decision"); None for other kinds
    message_type: str
    recipients: tuple[RecipientRule, ...]


@dataclass(frozen=True, slots=True)
class Match:
    rule: TriggerRule
    outcome: str | None  # the pathway code's outcome letter, if any


@dataclass(frozen=True)
class TriggerSet:
    """The trigger rules in force from one date."""

    version: str
    effective_from: date
    rules: tuple[TriggerRule, ...]
    codes: CodeList
    # lookups built once: a status change asks for every event of the pathway's history
    _by_event: dict[tuple[EventKind, str | None], TriggerRule] = field(init=False, repr=False, compare=False)
    _parsed: dict[str, tuple[str, str | None] | None] = field(default_factory=dict, init=False, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_event", {(r.kind, r.event): r for r in self.rules})

    def match(self, ev: PathwayEvent) -> Match | None:
        """The rule the event triggers, or None (a code not on the code list triggers nothing)."""
        if ev.kind is not EventKind.PATHWAY_CODE:
            rule = self._by_event.get((ev.kind, None))
            return Match(rule, None) if rule else None
        parsed = self._parse(ev.code) if ev.code else None
        if parsed is None:
            return None
        rule = self._by_event.get((ev.kind, parsed[0]))
        return Match(rule, parsed[1]) if rule else None

    def _parse(self, code: str) -> tuple[str, str | None] | None:
        if code not in self._parsed:
            try:
                parsed = self.codes.parse(code.upper())
                self._parsed[code] = (parsed.event, parsed.outcome)
            except UnknownCode:
                self._parsed[code] = None
        return self._parsed[code]


@dataclass(frozen=True)
class TriggerBook:
    """Every version of the trigger rules, oldest first."""

    versions: tuple[TriggerSet, ...]

    def for_day(self, day: date) -> TriggerSet:
        """The version in force on a date (the oldest one before any version)."""
        for version in reversed(self.versions):
            if version.effective_from <= day:
                return version
        return self.versions[0]

    def message_type(self, trigger: Trigger) -> str | None:
        return next((r.message_type for r in self.versions[-1].rules if r.trigger is trigger), None)

    def never_gated_by(self, gate: Gate) -> set[tuple[Trigger, Role]]:
        """(trigger, role) pairs no version gates by `gate`: a stored row of one that this gate
        suppressed was planned under earlier rules (`services.messaging.replan` re-plans it)."""
        pairs = [(rule.trigger, r.role, r.gate) for v in self.versions for rule in v.rules for r in rule.recipients]
        gated = {(t, role) for t, role, g in pairs if g is gate}
        return {(t, role) for t, role, _ in pairs} - gated

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], codes: CodeList | None = None) -> TriggerBook:
        """Parse and check a triggers document; ValueError names what is wrong."""
        codes = codes or code_list()
        if set(doc["gates"]) != set(Gate):
            raise ValueError(f"gates must describe exactly {sorted(Gate)}")
        base = doc["base"]["triggers"]
        sets = []
        for version in doc["versions"]:
            merged = {**base, **(version.get("triggers") or {})}
            rules = []
            for name, spec in merged.items():
                full = {**base.get(name, {}), **spec}
                if name in base and full["messageType"] != base[name]["messageType"]:
                    raise ValueError(f"version {version['version']}: the message type of {name!r} is not versioned")
                rules.append(_rule(name, full, codes))
            sets.append(TriggerSet(str(version["version"]), date.fromisoformat(version["effectiveFrom"]),
                                   tuple(rules), codes))
        return cls(tuple(sorted(sets, key=lambda s: s.effective_from)))


def _rule(name: str, spec: Mapping[str, Any], codes: CodeList) -> TriggerRule:
    trigger = Trigger(name)
    kind = EventKind(spec["on"]["kind"])
    event = spec["on"].get("event")
    if (kind is EventKind.PATHWAY_CODE) != (event is not None):
        raise ValueError(f"trigger {name!r}: a pathway code names its event, other kinds none")
    if event is not None and event not in {e["event"] for e in codes.events.values()}:
        raise ValueError(f"trigger {name!r}: {event!r} is not an event of the code list")
    recipients = []
    for r in spec["recipients"]:
        when = r.get("when") or {}
        if set(when) - _CONDITIONS:
            raise ValueError(f"trigger {name!r}: unknown conditions {sorted(set(when) - _CONDITIONS)}")
        outcomes = when.get("outcomes")
        recipients.append(RecipientRule(
            role=Role(r["role"]), gate=Gate(r.get("gate", Gate.NONE)),
            outcomes=frozenset(outcomes) if outcomes is not None else None,
            treatment_plan_changed=when.get("treatmentPlanChanged"),
        ))
    return TriggerRule(trigger, kind, event, spec["messageType"], tuple(recipients))


@cache
def trigger_book() -> TriggerBook:
    """The rules shipped in ``profiles/messaging/triggers.json``."""
    text = resources.files("profiles").joinpath("messaging/triggers.json").read_text("utf-8")
    return TriggerBook.from_document(json.loads(text))
