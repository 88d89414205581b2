"""Rule sets: the deadlines and clock rules of a pathway type, as versioned data.

One JSON file per pathway type in ``profiles/rules/``; each has a ``base`` and
``versions`` that take effect on a date (``effectiveFrom``) and override the base.
The version in force is chosen by the pathway's start date, so the 2019 and 2023
start-date rules live side by side. A new pathway type or rule version is a data change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

from forlop.events import Setting

FROM_START_REGISTRATION = "from-start-registration"
TARGETS_FILE = "national-targets.json"  # beside the rule sets, read by `targets`


class UnknownPathwayType(KeyError):
    pass


@dataclass(frozen=True)
class RuleSet:
    """The rules in force for one pathway type from one date."""

    pathway_type: str
    version: str
    effective_from: date
    start_date_rule: str  # "referral-received" (2019) | "referral-assessed" (2023)
    deadlines: dict[str, Any]
    patient_caused_changes: frozenset[str]
    service_caused_changes: frozenset[str]
    extended_assessment_outcomes: frozenset[str]
    treatment_outcomes: frozenset[str]
    follow_up_elsewhere_outcomes: frozenset[str]
    due_soon_days: int
    late_registration_days: int
    passive_after_days: int
    # the regulation on discharge-ready patients: the municipality hears of an admission within this
    admission_notice_hours: int = 24
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.pathway_type}@{self.version}"

    def days(self, interval: str, setting: Setting | str) -> int | None:
        """Calendar days allowed for an interval in a setting; None when the interval has no deadline."""
        spec = self.deadlines.get(interval)
        if not isinstance(spec, dict):
            return None
        value = spec.get(Setting(setting).value)
        return int(value) if value is not None else None

    def has_interval(self, interval: str) -> bool:
        return interval in self.deadlines

    @classmethod
    def from_data(cls, pathway_type: str, merged: dict[str, Any]) -> RuleSet:
        return cls(
            pathway_type=pathway_type,
            version=str(merged["version"]),
            effective_from=date.fromisoformat(merged["effectiveFrom"]),
            start_date_rule=merged.get("startDate", "referral-assessed"),
            deadlines=dict(merged.get("deadlines", {})),
            patient_caused_changes=frozenset(merged.get("patientCausedChanges", [])),
            service_caused_changes=frozenset(merged.get("serviceCausedChanges", [])),
            extended_assessment_outcomes=frozenset(merged.get("extendedAssessmentOutcomes", ["U"])),
            treatment_outcomes=frozenset(merged.get("treatmentOutcomes", [])),
            follow_up_elsewhere_outcomes=frozenset(merged.get("followUpElsewhereOutcomes", [])),
            due_soon_days=int(merged.get("dueSoonDays", 7)),
            late_registration_days=int(merged.get("lateRegistrationDays", 14)),
            passive_after_days=int(merged.get("passiveAfterDays", 90)),
            admission_notice_hours=int(merged.get("admissionNoticeHours", 24)),
            extra={k: v for k, v in merged.items() if k in ("note", "source")},
        )


@dataclass(frozen=True)
class RuleBook:
    """Every rule set version of every pathway type."""

    versions: dict[str, tuple[RuleSet, ...]]  # pathway type -> versions, oldest first

    @classmethod
    def load(cls, due_soon_days: int | None = None) -> RuleBook:
        """The rule sets shipped in ``profiles/rules``; ``due_soon_days`` overrides every version's horizon."""
        files = [
            f for f in resources.files("profiles").joinpath("rules").iterdir()
            if f.name.endswith(".json") and f.name != TARGETS_FILE
        ]
        return cls.from_documents([json.loads(f.read_text("utf-8")) for f in files], due_soon_days)

    @classmethod
    def from_documents(cls, documents: list[dict[str, Any]], due_soon_days: int | None = None) -> RuleBook:
        versions: dict[str, tuple[RuleSet, ...]] = {}
        for doc in documents:
            ptype = doc["pathwayType"]
            sets = []
            for version in doc["versions"]:
                merged = merge(doc.get("base", {}), version)
                if due_soon_days is not None:
                    merged["dueSoonDays"] = due_soon_days
                sets.append(RuleSet.from_data(ptype, merged))
            versions[ptype] = tuple(sorted(sets, key=lambda r: r.effective_from))
        return cls(versions)

    def for_pathway(self, pathway_type: str, start: date | None) -> RuleSet:
        """The version in force on the pathway's start date (the oldest one before any version)."""
        try:
            sets = self.versions[pathway_type]
        except KeyError:
            raise UnknownPathwayType(pathway_type) from None
        if start is None:
            return sets[-1]
        in_force = [r for r in sets if r.effective_from <= start]
        return in_force[-1] if in_force else sets[0]

    @property
    def pathway_types(self) -> list[str]:
        return sorted(self.versions)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A version over its base: nested objects merge, everything else the version's."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
