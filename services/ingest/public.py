"""What other services and the application may use of the ingest service; the rest is its own.

Records in, canonical events (`forlop.events.PathwayEvent`) or problems out: the checks and
mappings of the vendor formats, the ingest flow, its Kafka entrypoint and its dead letters' replay.
"""

from __future__ import annotations

from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.dead_letters import ReplayOutcome, replay_dead_letter
from services.ingest.domain.national_id import synthetic_national_id
from services.ingest.domain.normalise import (
    BodyError,
    RejectedEvent,
    TooManyRecords,
    parse_body,
    parse_vendor_event,
)
from services.ingest.domain.validation import SOURCES, Problem, bounds, schema, validate
from services.ingest.entrypoints.kafka import ingest_handler
from services.ingest.handlers import (
    ConflictingDuplicates,
    InboundRecord,
    IngestResult,
    accept,
    check_record,
    check_records,
    forward,
    ingest,
)

__all__ = [
    "SOURCES",
    "BodyError",
    "ConflictingDuplicates",
    "InboundRecord",
    "IngestResult",
    "Problem",
    "RejectedEvent",
    "SqlIngestUnitOfWork",
    "ReplayOutcome",
    "TooManyRecords",
    "accept",
    "bounds",
    "check_record",
    "check_records",
    "forward",
    "ingest",
    "ingest_handler",
    "parse_body",
    "parse_vendor_event",
    "replay_dead_letter",
    "schema",
    "synthetic_national_id",
    "validate",
]
