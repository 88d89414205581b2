"""What the pathway service's handlers need besides their unit of work: the rules, the topics, options."""

from __future__ import annotations

from dataclasses import dataclass

from forlop.config import Topics
from services.pathway.domain.rules import RuleBook


@dataclass(frozen=True)
class PathwayDeps:
    rules: RuleBook
    topics: Topics
    validate_fhir: bool = True  # check each mapped resource with fhir.resources (FORLOP_FHIR_VALIDATE)
