"""What other services and the application may use of the pathway service; the rest is its own.

Canonical events in; each pathway's status derived from its whole history (`derive`), stored
with its FHIR resources, and status changes out. Its Kafka entrypoint, HTTP blueprint and
commands are here for the application to wire; its handlers take a unit of work (`ports`), the
SQL one (`SqlUnitOfWork`) or a replay's bulk one (`BulkUnitOfWork`).
"""

from __future__ import annotations

from services.pathway.adapters.bulk import BulkUnitOfWork, queued_after, queued_count
from services.pathway.adapters.fhir_history import (
    HistoryPage,
    Version,
    deletion,
    instance_history,
    read_version,
    type_history,
)
from services.pathway.adapters.fhir_repository import StoredResource, read_resource, read_resources
from services.pathway.adapters.fhir_search import search_page
from services.pathway.adapters.reach import read_within
from services.pathway.adapters.reports import compute_indicators, national_ids
from services.pathway.adapters.repository import SqlUnitOfWork, load_history
from services.pathway.alerts import store_alerts
from services.pathway.deps import PathwayDeps
from services.pathway.derivation import Derivation, derive_pathway, history_hash_of, in_order
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.search_index import REFERENCE_TARGETS, SEARCH_PARAMS
from services.pathway.domain.units import UnitFacts, merged_units, unit_facts, with_units
from services.pathway.entrypoints.cli import CliContext, add_commands
from services.pathway.entrypoints.http import pathway_bp
from services.pathway.entrypoints.kafka import pathway_handler
from services.pathway.handlers import (
    PathwayResult,
    RefreshPlan,
    StatusChange,
    handle_events,
    plan_refresh,
    record_events,
    refresh_queued,
    republish,
    stabilise_units,
)
from services.pathway.scanner import scan

__all__ = [
    "REFERENCE_TARGETS",
    "SEARCH_PARAMS",
    "BulkUnitOfWork",
    "HistoryPage",
    "StoredResource",
    "Version",
    "deletion",
    "instance_history",
    "read_version",
    "type_history",
    "CliContext",
    "UnitFacts",
    "Derivation",
    "PathwayDeps",
    "PathwayResult",
    "RefreshPlan",
    "RuleBook",
    "SqlUnitOfWork",
    "StatusChange",
    "add_commands",
    "compute_indicators",
    "derive",
    "derive_pathway",
    "handle_events",
    "history_hash_of",
    "in_order",
    "load_history",
    "map_pathway",
    "merged_units",
    "national_ids",
    "pathway_bp",
    "pathway_handler",
    "plan_refresh",
    "queued_after",
    "queued_count",
    "read_resource",
    "record_events",
    "read_resources",
    "read_within",
    "refresh_queued",
    "republish",
    "scan",
    "stabilise_units",
    "search_page",
    "store_alerts",
    "unit_facts",
    "with_units",
]
