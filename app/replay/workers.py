"""A replay's worker processes: the computing for the next batch while the main process writes this one.

Only pure work goes to them: checking vendor records, deriving pathways and mapping them to FHIR,
building the XML of the messages their histories owe. Every write stays in the main process, in
the same transactions as without workers (SQLite has one writer). A worker reads histories on its
own connection; the main process uses a derivation only if the history it loads in its write
transaction is the one derived (`app.replay.pipeline._derive_chunk`), and a prebuilt message only
for the new row it was built for (`services.messaging.prebuild`), so a worker can make a replay
faster but never change what it stores.

Workers are spawned, not forked: the main process holds a database engine and threads.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime
from typing import Any

from app.bootstrap import messaging_deps_from, pathway_deps_from
from forlop.clock import system_clock
from forlop.collector import collector_paused
from forlop.config import Settings
from forlop.events import PathwayEvent
from forlop.fhir.ids import set_patient_id_key
from forlop.logging import configure_logging
from forlop.status import PathwayStatus
from forlop.storage import Store
from services.ingest.public import check_records
from services.messaging.public import prebuild_messages
from services.pathway.public import derive_pathway, in_order, load_history


def default_count() -> int:
    """One worker beside the replay where there is a second core; none on one core."""
    return 1 if (os.cpu_count() or 1) > 1 else 0


# One worker's wiring, set up once by `_start` in the worker process.
_worker: dict[str, Any] = {}


def _start(settings: Settings, database_url: str) -> None:
    configure_logging(settings.log_level, settings.log_format, mask_key=settings.log_mask_key)
    set_patient_id_key(settings.patient_id_key)  # Patient ids in the FHIR resources
    _worker["store"] = Store(database_url, pool_size=1)
    _worker["pathway"] = pathway_deps_from(settings)
    _worker["messaging"] = messaging_deps_from(settings, system_clock)


def check_batch(source: str, records: Sequence[Any]) -> bytes:
    """Each record's canonical event as a dict (cheaper to send back than the event), or its problems."""
    return _packed([c.to_dict() if isinstance(c, PathwayEvent) else c for c in check_records(source, records)])


def derive_batch(pathway_keys: Sequence[str], now: datetime) -> bytes:
    """The pathways' derivations from their stored histories, with their owed messages prebuilt."""
    with _worker["store"].read() as conn:
        histories = load_history(conn, pathway_keys)
    out = []
    for key in pathway_keys:
        history = histories.get(key)
        if not history:
            continue
        d = derive_pathway(key, history, now, _worker["pathway"])
        # the history in the order a status change carries it to messaging (`plan_refresh`)
        d.messages = prebuild_messages(in_order(history), PathwayStatus.from_dict(d.status), now, _worker["messaging"])
        out.append(d)
    return _packed(out)


def _packed(value: Any) -> bytes:
    # Pickled here and unpickled by `unpacked` in the caller's thread with the collector paused:
    # unpickled by the pool's result thread, a chunk's hundreds of thousands of new containers set
    # the cyclic collector off again and again (docs/performance.md).
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpacked(future: Future[bytes]) -> Any:
    """A worker call's result."""
    data = future.result()
    with collector_paused():
        return pickle.loads(data)


class ReplayWorkers:
    """`count` worker processes reading `database_url` (the replay's store); `submit` queues a call
    and returns its future."""

    def __init__(self, settings: Settings, database_url: str, count: int) -> None:
        self.count = count
        self._pool = ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
            initargs=(settings, database_url))

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        return self._pool.submit(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
