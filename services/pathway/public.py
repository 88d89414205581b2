"""What other services and the application may use of the pathway service; the rest is its own.

Canonical events in; each pathway's status derived from its whole history (`derive`), stored
with its FHIR resources, and status changes out. Its Kafka entrypoint, HTTP blueprint and
commands are here for the application to wire.
"""

from __future__ import annotations

from services.pathway.adapters.fhir_repository import read_resource
from services.pathway.adapters.fhir_search import search_page
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.search_index import SEARCH_PARAMS
from services.pathway.entrypoints.cli import CliContext, add_commands
from services.pathway.entrypoints.http import pathway_bp
from services.pathway.entrypoints.kafka import pathway_handler
from services.pathway.handlers import (
    Derivation,
    PathwayDeps,
    PathwayResult,
    derive_pathway,
    handle_events,
    load_history,
    refresh_queued,
    republish,
    scan,
)
from services.pathway.reports import compute_indicators, national_ids

__all__ = [
    "SEARCH_PARAMS",
    "CliContext",
    "Derivation",
    "PathwayDeps",
    "PathwayResult",
    "RuleBook",
    "add_commands",
    "compute_indicators",
    "derive",
    "derive_pathway",
    "handle_events",
    "load_history",
    "map_pathway",
    "national_ids",
    "pathway_bp",
    "pathway_handler",
    "read_resource",
    "refresh_queued",
    "republish",
    "scan",
    "search_page",
]
