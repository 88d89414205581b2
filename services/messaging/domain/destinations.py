"""Where a discharged patient goes, as the PLO message says it: ``profiles/codes/discharge-destinations.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from forlop.events import DischargeDestination


@dataclass(frozen=True, slots=True)
class Place:
    code: str  # in the place code list (code system 8408)
    display: str  # the code list's text
    text: str  # how the message says it, in a sentence ("sykehjem", "ikke oppgitt")


@dataclass(frozen=True)
class Places:
    code_system: str
    destinations: dict[DischargeDestination, Place]
    not_stated: Place

    def of(self, destination: DischargeDestination | None) -> Place:
        """The place a destination is; "not stated" when the EHR did not say (never home)."""
        return self.not_stated if destination is None else self.destinations[destination]


@cache
def places() -> Places:
    data = json.loads(resources.files("profiles").joinpath("codes/discharge-destinations.json").read_text("utf-8"))
    by_value = {DischargeDestination(k): Place(**v) for k, v in data["destinations"].items()}
    missing = set(DischargeDestination) - set(by_value)
    if missing:
        raise ValueError(f"discharge-destinations.json lacks {sorted(missing)}")
    return Places(data["codeSystem"], by_value, Place(**data["notStated"]))
