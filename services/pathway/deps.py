"""What the pathway service's handlers need besides their unit of work: the rules, the topics, options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from forlop.config import Topics
from services.pathway.domain.rules import RuleBook


@dataclass(frozen=True)
class PathwayDeps:
    rules: RuleBook
    topics: Topics
    validate_fhir: bool = True  # check each mapped resource with fhir.resources (FORLOP_FHIR_VALIDATE)
    # organisation number -> name of the health trusts forlop knows by name (the one it sends for)
    trust_names: Mapping[str, str] = field(default_factory=dict)
