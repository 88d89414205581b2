"""The cyclic garbage collector paused while a batch is handled (`Store.transaction`, the unit of work).

A batch (a consumer poll, a replay chunk, a scanner pass) allocates tens of thousands of dicts and lists (events,
statuses, FHIR resources, rows) that all live until the batch ends and are then freed by reference
counting. With automatic collection on, every 700 allocations the collector walked them again
(and again as they aged into the older generations): a seventh of a Kafka run's time in the
pathway process (`gc.callbacks`; docs/performance.md). Paused, the batch's objects are freed
before the collector looks, and it finds only what really outlives the batch.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Several consumers in one process (`forlop run`) may keep some batch running all the time: past
# this many young objects the collector runs when a batch ends, so cycles cannot pile up.
YOUNG_LIMIT = 200_000

_lock = threading.Lock()
_active = 0
_resume = False  # whether the collector was on when the first batch paused it


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while any thread is inside; on leaving, the collector is as it was."""
    global _active, _resume
    with _lock:
        if _active == 0:
            _resume = gc.isenabled()
            gc.disable()
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            last = _active == 0
            if last and _resume:
                gc.enable()
        if not last and gc.get_count()[0] > YOUNG_LIMIT:
            gc.collect(0)
