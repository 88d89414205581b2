"""Background work on threads: a step run every interval until stopped, woken early on demand."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from forlop.kafka import Backoff

log = logging.getLogger(__name__)


class PeriodicWorker:
    """Runs `step()` every `interval` seconds on a thread until stopped; errors are logged, not fatal.

    `wake()` runs the next step at once instead of at the end of the interval (the outbox relay
    is woken by its consumer's commit, so an event does not wait out the polling interval). After
    a failed step it waits `backoff` (doubling with each failure in a row, capped) instead, and a
    wake() does not cut that short: a broker that is down is not asked again at every commit.
    """

    def __init__(self, name: str, step: Callable[[], object], interval: float, backoff: Backoff | None = None) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.backoff = backoff or Backoff(initial_s=interval, max_s=max(interval, 30.0))
        self._stop = threading.Event()
        self.wait: Callable[[float], object] = self._stop.wait  # how it waits out a backoff (tests replace it)
        self._wake = threading.Event()
        self.last_error: str | None = None
        self.last_run: datetime | None = None
        self.failures_in_a_row = 0

    def run(self) -> None:
        while not self._stop.is_set():
            # Cleared before the step, not after the wait: a wake() while the step runs (a commit
            # of rows the step did not see) runs the next step at once instead of being lost.
            self._wake.clear()
            try:
                busy = self.step()
                self.last_error = None
                self.failures_in_a_row = 0
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = self.backoff.delay(self.failures_in_a_row)
                self.failures_in_a_row += 1
                log.exception("%s failed (%d in a row); next try in %.1f s", self.name, self.failures_in_a_row, delay)
                self.wait(delay)
                continue
            if not busy and not self._stop.is_set():
                self._wake.wait(self.interval)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def start_thread(target: Callable[[], None], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
