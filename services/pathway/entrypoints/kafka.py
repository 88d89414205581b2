"""The pathway service's Kafka entrypoint: a batch of canonical events into `handlers.handle_events`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import Connection

from forlop.clock import Clock
from forlop.events import PathwayEvent
from forlop.kafka import Record, TxHandler
from services.pathway.handlers import PathwayDeps, handle_events


def pathway_handler(clock: Clock, deps: PathwayDeps, defer: bool = False) -> TxHandler:
    """The handler of the canonical events' topic, run in the consumer's transaction.

    `defer`: store the events and queue their pathways for one derivation later (replay)."""

    def handle(conn: Connection, records: Sequence[Record]) -> None:
        events = [PathwayEvent.from_dict(orjson.loads(r.value)) for r in records]
        handle_events(conn, events, clock(), deps, defer=defer)

    return handle
