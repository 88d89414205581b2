"""End-to-end fixtures: the real services on threads against the bundled broker and a real store."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from app.bootstrap import Runtime
from app.serve import ServiceProcess
from forlop.clock import FixedClock
from forlop.config import Topics, load_settings


def eventually(check: Callable[[], object], timeout: float = 60.0, every: float = 0.2) -> object:
    """Poll until `check` returns something truthy (not a wall-clock deadline of the domain)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@pytest.fixture
def pipeline(broker: str, store, tmp_path, contracts_dir) -> Iterator[Callable[..., Runtime]]:
    """Start ingest, pathway, messaging and API services for one test, with topics of its own."""
    started: list[ServiceProcess] = []

    def start(clock: FixedClock) -> Runtime:
        suffix = uuid.uuid4().hex[:8]
        topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
        settings = replace(
            load_settings({"FORLOP_DATA_DIR": str(tmp_path), }),
            kafka_bootstrap=broker,
            topics=topics,
            consumer_group=f"test-{suffix}",
            max_poll_interval_ms=3000,
            http_host="127.0.0.1",
            http_port=0,
            partitions=3,
        )
        rt = Runtime(settings, store, clock)
        rt.ensure_topics()
        for service in ("ingest", "pathway", "messaging", "api"):
            proc = ServiceProcess(Runtime(settings, store, clock), service)
            started.append(proc.build().start())
        from forlop.kafka import ConsumerLoop

        for proc in started:
            for w in proc.workers:
                if isinstance(w, ConsumerLoop):
                    assert w.joined.wait(30), f"{w.service} consumer did not join its group"
        rt.api_port = started[-1].port  # type: ignore[attr-defined]
        rt.processes = {p.service: p for p in started}  # type: ignore[attr-defined]
        return rt

    yield start
    for proc in started:
        proc.stop()
