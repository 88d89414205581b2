"""The database goes away and comes back: no record is blamed, /readyz says not ready meanwhile, and
everything sent during the outage is processed once it is back.

The outage is real: PostgreSQL is reached through a TCP proxy that the test cuts (listener closed,
every connection dropped: connections are refused) and restores; SQLite's database directory is moved
away (no connection can open the file) and back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.bootstrap import PeriodicWorker, Runtime
from app.serve import ServiceProcess
from forlop.clock import FixedClock
from forlop.config import Topics, load_settings
from forlop.kafka import ConsumerLoop, make_producer
from forlop.storage import Store, schema
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker

CET = timezone(timedelta(hours=1))
AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=CET)


class TcpProxy:
    """127.0.0.1:<port> -> upstream, until cut: then the port refuses connections and open ones are dropped."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        self._cut = False
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True  # a connection accepted while this runs is dropped too (see _accept)
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    server.close()
                    return
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _outage_store(store: Store, tmp_path: Path) -> tuple[Store, Callable[[], None], Callable[[], None]]:
    """A store of the same kind as `store` whose database can be made unreachable: (store, cut, restore)."""
    if store.dialect == "postgresql":
        proxy = TcpProxy((store.url.host or "127.0.0.1", store.url.port or 5432))
        proxied = Store(store.url.set(port=proxy.port).render_as_string(hide_password=False))
        return proxied, proxy.cut, proxy.restore
    home = tmp_path / "database"
    away = tmp_path / "database-moved-away"
    local = Store(f"sqlite:///{home / 'forlop.db'}")
    local.migrate()

    def cut() -> None:
        home.rename(away)
        local.dispose()  # no open connection outlives the move: every new one fails to open the file

    def restore() -> None:
        away.rename(home)

    return local, cut, restore


def _readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_database_outage_blames_no_record_and_everything_is_processed_after_it(
    broker, store, tmp_path, contracts_dir
) -> None:
    db, cut, restore = _outage_store(store, tmp_path)
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, topics=topics,
                       consumer_group=f"test-{suffix}", max_poll_interval_ms=1000, partitions=2,
                       http_host="127.0.0.1", http_port=0, retry_backoff_max_s=4)
    Runtime(settings, db).ensure_topics()
    waits: dict[str, list[float]] = {}

    def quick(name: str) -> Callable[[float], None]:
        def wait(seconds: float) -> None:  # the backoff asked for; the test does not sit it out
            waits.setdefault(name, []).append(seconds)
            time.sleep(0.05)

        return wait

    processes = []
    for service in ("ingest", "pathway"):
        proc = ServiceProcess(Runtime(settings, db, FixedClock(AS_OF)), service).build()
        for w in proc.workers:
            if isinstance(w, ConsumerLoop):
                w.wait = quick(service)
            elif isinstance(w, PeriodicWorker):
                w.wait = quick(f"{service}-{w.name}")
        processes.append(proc.start())
    try:
        for proc in processes:
            for w in proc.workers:
                if isinstance(w, ConsumerLoop):
                    assert w.joined.wait(30)
            eventually(lambda proc=proc: _readyz(proc.port)[0] == 200, 30)

        cut()
        lines = (contracts_dir / "dips-examples.ndjson").read_text().splitlines()
        producer = make_producer(settings)
        for line in lines:
            producer.send(topics.dips, key=json.loads(line)["patient"]["nationalId"].encode(), value=line.encode())
        producer.flush()
        producer.close()

        ingest = processes[0]
        consumer = next(w for w in ingest.workers if isinstance(w, ConsumerLoop))
        eventually(lambda: len(waits.get("ingest", [])) >= 5, 60)  # it kept trying, backing off
        status, body = _readyz(ingest.port)
        assert status == 503 and body["status"] == "not-ready"
        assert any(p.startswith("ingest consumer: database unavailable") for p in body["problems"]), body
        assert consumer.outage and "retrying in" in consumer.outage
        backoff = waits["ingest"][:5]
        assert backoff == sorted(backoff) and backoff[0] == 0.5 and max(waits["ingest"]) <= 4  # doubling, capped

        restore()
        eventually(lambda: _readyz(ingest.port)[0] == 200, 60)
        def derived() -> bool:
            with db.read() as conn:
                count = [conn.execute(select(func.count()).select_from(t)).scalar_one()
                         for t in (schema.pathway_events, schema.pathways)]
            return count == [len(lines), 3]

        eventually(derived, 60)  # every event sent during the outage reached the pathway service
        assert consumer.outage is None
        with db.read() as conn:
            assert conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar_one() == 0
            assert conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one() == len(lines)
    finally:
        for proc in processes:
            proc.stop()
        restore_quietly = contextlib.suppress(Exception)
        with restore_quietly:
            restore()
        db.dispose()
