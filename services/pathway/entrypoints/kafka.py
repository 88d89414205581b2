"""The pathway service's Kafka entrypoint: a batch of canonical events into `handlers.handle_events`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import Connection

from forlop.clock import Clock
from forlop.events import PathwayEvent
from forlop.kafka import Record, TxHandler
from services.pathway.adapters.repository import SqlUnitOfWork
from services.pathway.deps import PathwayDeps
from services.pathway.handlers import handle_events


def pathway_handler(clock: Clock, deps: PathwayDeps) -> TxHandler:
    """The handler of the canonical events' topic, run in the consumer's transaction."""

    def handle(conn: Connection, records: Sequence[Record]) -> None:
        events = [PathwayEvent.from_dict(orjson.loads(r.value)) for r in records]
        handle_events(SqlUnitOfWork(conn), events, clock(), deps)

    return handle
