"""The messaging service's Kafka entrypoint: status changes and AppRecs into `handlers.handle_batch`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import Connection

from forlop.clock import Clock
from forlop.kafka import Record, TxHandler
from services.messaging.deps import MessagingDeps
from services.messaging.handlers import Inbound, handle_batch


def messaging_handler(clock: Clock, deps: MessagingDeps, apprec_topic: str) -> TxHandler:
    """The handler of the status-changed and AppRec topics, run in the consumer's transaction."""

    def handle(conn: Connection, records: Sequence[Record]) -> None:
        # A record without a value (a tombstone) carries no receipt and no status: the consumer's
        # isolation dead-letters it rather than letting it pass unseen.
        if empty := [r for r in records if r.value is None]:
            raise ValueError(f"a record without a value on {empty[0].topic} (offset {empty[0].offset})")
        # In order, with every lock the batch needs taken first (services.messaging.handlers).
        handle_batch(conn, [
            Inbound(apprec=r.value, correlation=r.headers.get("correlation-id")) if r.topic == apprec_topic
            else Inbound(payload=orjson.loads(r.value), correlation=r.headers.get("correlation-id"))
            for r in records
        ], clock(), deps)

    return handle
