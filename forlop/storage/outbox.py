"""The outbox as a writer in the caller's transaction: the records a state change publishes are
committed with it, and the relay (`forlop.kafka.OutboxRelay`) publishes them after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from forlop.storage import schema
from forlop.storage.bulk import insert_many


class SqlOutbox:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Rows of the outbox table, ids drawn in their order (the relay publishes by id)."""
        insert_many(self.conn, schema.outbox, records)
