"""The ingest service's Kafka entrypoint: a batch of one vendor topic's records into `handlers.ingest`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from forlop.clock import Clock
from forlop.config import Topics
from forlop.kafka import Record, TxHandler
from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.handlers import InboundRecord, ingest


def ingest_handler(source: str, clock: Clock, topics: Topics) -> TxHandler:
    """The handler of `source`'s topic (dips or esp), run in the consumer's transaction."""

    def handle(conn: Connection, records: Sequence[Record]) -> None:
        inbound = [
            InboundRecord(r.value, r.origin, r.key.decode("utf-8", "replace") if r.key else None,
                          r.topic, r.partition, r.offset, r.headers)
            for r in records
        ]
        ingest(SqlIngestUnitOfWork(conn), source, inbound, clock(), topics)

    return handle
