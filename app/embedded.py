"""Every service of forlop in one process: ingest, pathway, messaging and the API.

Each service runs on threads as `forlop serve <service>` runs it (the wiring is the composition
root's, `app.bootstrap`), all on the broker and store the runtime's settings name. It starts no
broker: the development package's `forlop run` starts the bundled one and runs this on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import func, select

from app.bootstrap import SERVICES, Runtime
from app.serve import ServiceProcess
from forlop.config import Settings
from forlop.kafka import ConsumerLoop, client_options, group_id
from forlop.storage import schema

log = logging.getLogger(__name__)


def consumer_lag(settings: Settings, services: tuple[str, ...]) -> int:
    """Records produced but not yet committed by the services' consumer groups."""
    admin = KafkaAdminClient(**client_options(settings))
    try:
        probe = KafkaConsumer(**client_options(settings))
        try:
            lag = 0
            for service in services:
                gid = group_id(settings, service)
                offsets = admin.list_group_offsets(gid).get(gid, {})
                topics = {
                    "ingest": [settings.topics.dips, settings.topics.esp],
                    "pathway": [settings.topics.events],
                    "messaging": [settings.topics.status_changed],
                }[service]
                parts = [
                    TopicPartition(t, p) for t in topics for p in (probe.partitions_for_topic(t) or [])
                ]
                ends = probe.end_offsets(parts)
                for tp, end in ends.items():
                    committed = offsets.get(tp)
                    # clamp: the broker may report a batch-based end offset below the committed one
                    lag += max(0, end - (committed.offset if committed and committed.offset >= 0 else 0))
            return lag
        finally:
            probe.close()
    finally:
        admin.close()


def wait_until_idle(rt: Runtime, timeout: float = 120.0) -> bool:
    """Idle = outbox published and every consumer group at the end of its topics, three times in a row."""
    deadline = time.monotonic() + timeout
    calm = 0
    pending = lag = 0
    while time.monotonic() < deadline:
        with rt.store.read() as conn:
            pending = conn.execute(
                select(func.count()).select_from(schema.outbox).where(
                    schema.outbox.c.published_at.is_(None), schema.outbox.c.parked_at.is_(None))  # parked: see dlq
            ).scalar_one()
        lag = consumer_lag(rt.settings, ("ingest", "pathway", "messaging"))
        calm = calm + 1 if pending == 0 and lag == 0 else 0
        if calm >= 3:
            return True
        time.sleep(0.3)
    log.warning("not idle after %.0fs: %d outbox records unpublished, %d records behind", timeout, pending, lag)
    return False


@dataclass
class EmbeddedServices:
    """The four services started on `runtime` (its store migrated, its topics made): the API on the
    settings' HTTP port, each consumer service's probes on a free one."""

    runtime: Runtime
    processes: list[ServiceProcess] = field(default_factory=list)

    @classmethod
    def start(cls, runtime: Runtime) -> EmbeddedServices:
        runtime.store.migrate()
        runtime.ensure_topics()
        services = cls(runtime)
        try:
            for service in SERVICES:
                rt = runtime if service == "api" else Runtime(
                    replace(runtime.settings, http_port=0), runtime.store, runtime.clock)
                services.processes.append(ServiceProcess(rt, service).build().start())
        except BaseException:
            services.stop()
            raise
        return services

    @property
    def api_port(self) -> int:
        return next(p.port for p in self.processes if p.service == "api")

    def wait_joined(self, timeout: float = 60.0) -> None:
        """Until every consumer has joined its group (or `timeout` has passed)."""
        loops = [w for p in self.processes for w in p.workers if isinstance(w, ConsumerLoop)]
        deadline = time.monotonic() + timeout
        for loop in loops:
            loop.joined.wait(max(0.1, deadline - time.monotonic()))

    def wait_until_idle(self, timeout: float = 120.0) -> bool:
        return wait_until_idle(self.runtime, timeout)

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()
