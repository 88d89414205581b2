"""The national targets the indicators are measured against, as versioned data.

``profiles/rules/national-targets.json`` holds a ``base`` and ``versions`` that take effect on a date
and override it, like the rule sets beside it; a report compares with the version in force on its
last day. Loading checks the file: a target this code does not compute, a comparison other than the
target's, or a threshold for a pathway type the code list does not know is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from forlop.codes import code_list
from services.pathway.domain.rules import TARGETS_FILE, merge

WAITING = "average-waiting-days"
EVALUATION = "evaluation-share"
# the targets the indicators compute, and how each compares
_COMPARISONS = {WAITING: "below", EVALUATION: "at-least"}



@dataclass(frozen=True)
class Target:
    name: str
    description: str
    comparison: str  # "below" | "at-least"
    thresholds: dict[str, int | float]  # pathway type -> threshold, as written in the file

    def met(self, pathway_type: str, value: float | None) -> bool:
        if value is None:
            return False
        threshold = self.thresholds[pathway_type]
        return value < threshold if self.comparison == "below" else value >= threshold


@dataclass(frozen=True)
class TargetSet:
    """The national targets in force from one date."""

    version: str
    effective_from: date
    targets: dict[str, Target]

    @property
    def waiting(self) -> Target:
        return self.targets[WAITING]

    @property
    def evaluation(self) -> Target:
        return self.targets[EVALUATION]


@dataclass(frozen=True)
class NationalTargets:
    versions: tuple[TargetSet, ...]  # oldest first

    def for_day(self, day: date) -> TargetSet:
        """The version in force on a date (the oldest one before any version)."""
        in_force = [v for v in self.versions if v.effective_from <= day]
        return in_force[-1] if in_force else self.versions[0]

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> NationalTargets:
        """Parse and check a targets document; ValueError names what is wrong."""
        known_types = set(code_list().pathway_types)
        sets = []
        for version in doc["versions"]:
            merged = merge(doc.get("base", {}), version)
            name = f"version {version.get('version')}"
            specs = merged.get("targets") or {}
            if set(specs) != set(_COMPARISONS):
                raise ValueError(f"{name}: the targets must be exactly {sorted(_COMPARISONS)}")
            targets = {}
            for target, spec in specs.items():
                if spec.get("comparison") != _COMPARISONS[target]:
                    raise ValueError(f"{name}: {target} compares {_COMPARISONS[target]!r}")
                thresholds = spec.get("thresholds") or {}
                unknown = sorted(set(thresholds) - known_types)
                if unknown:
                    raise ValueError(f"{name}: {target} names pathway types not on the code list: {unknown}")
                if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in thresholds.values()):
                    raise ValueError(f"{name}: {target} thresholds must be numbers")
                targets[target] = Target(target, spec["description"], spec["comparison"], dict(thresholds))
            sets.append(TargetSet(str(merged["version"]), date.fromisoformat(merged["effectiveFrom"]), targets))
        if not sets:
            raise ValueError("no version of the national targets")
        return cls(tuple(sorted(sets, key=lambda s: s.effective_from)))


@cache
def national_targets() -> NationalTargets:
    """The targets shipped in ``profiles/rules/national-targets.json``."""
    text = resources.files("profiles").joinpath("rules", TARGETS_FILE).read_text("utf-8")
    return NationalTargets.from_document(json.loads(text))
