"""One service per process (`forlop serve ingest|pathway|messaging|api`), as Kubernetes runs them.

Every process serves /healthz, /readyz and /metrics on FORLOP_HTTP_PORT; the api
process serves the whole API there. Each also relays its outbox to Kafka. The api can
run as several processes on one port (FORLOP_HTTP_WORKERS, `ApiWorkers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify
from kafka import KafkaAdminClient
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from app.bootstrap import SERVICES, Runtime
from forlop.auth import ensure_dev_key
from forlop.config import check_production
from forlop.kafka import ConsumerLoop, client_options
from forlop.workers import PeriodicWorker, start_thread
from forlop.wsgi import HttpServer, ServerLimits, listen_socket, make_http_server

log = logging.getLogger(__name__)

__all__ = ["SERVICES", "ApiWorkers", "ServiceProcess", "serve_forever"]

# Which API process answered a scrape (FORLOP_HTTP_WORKERS > 1: each has its own registry).
http_worker = Gauge("forlop_http_worker", "The API process that answered: its index among FORLOP_HTTP_WORKERS "
                    "and its pid (always 1)", ["worker", "pid"])


def broker_check(runtime: Runtime) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            admin = KafkaAdminClient(**client_options(runtime.settings), request_timeout_ms=3000)
            admin.close()
            return None
        except Exception as exc:
            return f"broker unreachable: {type(exc).__name__}"

    return check


@dataclass
class ServiceProcess:
    """The workers of one service, started on threads, and the HTTP server for probes (or the API)."""

    runtime: Runtime
    service: str
    workers: list[ConsumerLoop | PeriodicWorker] = field(default_factory=list)
    server: HttpServer | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    closers: list[Callable[[], object]] = field(default_factory=list)
    relay_outbox: bool = True  # each process publishes the outbox rows of its own service's topics
    sock: socket.socket | None = None  # bound already (an API worker's SO_REUSEPORT socket); else host:port
    worker: int = 0  # index among the API's processes (FORLOP_HTTP_WORKERS)

    def readiness(self) -> list[Callable[[], str | None]]:
        checks: list[Callable[[], str | None]] = []
        for w in self.workers:
            if isinstance(w, ConsumerLoop):
                checks.append(
                    lambda w=w: None if w.joined.is_set() else f"{w.service} consumer has not joined its group yet"
                )
                # backing off from a database or broker outage: not ready, nothing dead-lettered
                checks.append(lambda w=w: f"{w.service} consumer: {w.outage}" if w.outage else None)
        return checks

    def build(self) -> ServiceProcess:
        """The service's workers and HTTP server, as the composition root wires them (`app.bootstrap`)."""
        rt = self.runtime
        parts = rt.service_parts(self.service, relay_outbox=self.relay_outbox)
        self.workers += parts.workers
        self.closers += parts.closers
        app = parts.app if parts.app is not None else self.probe_app()
        if self.service == "api":
            http_worker.labels(str(self.worker), str(os.getpid())).set(1)
        # the API's request threads; a consumer service's server only answers probes and /metrics
        threads = rt.settings.http_threads if self.service == "api" else 2
        self.server = make_http_server(rt.settings.http_host, rt.settings.http_port, app, threads, self.sock,
                                       ServerLimits.of(rt.settings))
        return self

    def probe_app(self) -> Flask:
        app = Flask(f"forlop-{self.service}")
        rt = self.runtime
        broker = broker_check(rt)

        @app.get("/healthz")
        def healthz() -> Response:
            return jsonify(status="alive", service=self.service)

        @app.get("/readyz")
        def readyz() -> Response:
            problems = [p for p in [None if rt.store.ping() else "database unreachable", broker()] if p]
            problems += [p for p in (c() for c in self.readiness()) if p]
            body = {"status": "not-ready" if problems else "ready", "service": self.service, "problems": problems}
            return Response(json.dumps(body), 503 if problems else 200, mimetype="application/json")

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

        return app

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_port

    def start(self) -> ServiceProcess:
        for w in self.workers:
            name = getattr(w, "name", None) or f"{self.service}-consumer"
            self.threads.append(start_thread(w.run, name))
        assert self.server is not None
        self.threads.append(start_thread(self.server.serve_forever, f"{self.service}-http"))
        return self

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(timeout=10)
        for close in self.closers:  # after the workers: nothing uses the producers any more
            with contextlib.suppress(Exception):
                close()


def freeze_startup_heap() -> None:
    """Keep what starting the process allocated (modules, the app, rule sets) out of the collector's passes.

    Those objects live as long as the process; a full collection walking them paused every request
    in flight every few thousand requests (the API's p99; docs/performance.md).
    """
    gc.collect()
    gc.freeze()


def serve_forever(runtime: Runtime, service: str, *, ensure_topics: bool = True, relay_outbox: bool = True) -> int:
    """Serve until SIGTERM or SIGINT; the exit status (1: the API's workers kept dying).

    `ensure_topics`, `relay_outbox`: False where there is no broker (the bench's API).
    """
    check_production(runtime.settings, service)  # before anything starts: each missing trust setting named
    runtime.store.check_schema()
    if ensure_topics:
        runtime.ensure_topics()
    if service == "api" and runtime.settings.http_workers > 1:
        return ApiWorkers(runtime, runtime.settings.http_workers, relay_outbox=relay_outbox).run()
    proc = ServiceProcess(runtime, service, relay_outbox=relay_outbox).build()
    freeze_startup_heap()
    proc.start()
    log.info("serving", extra={"ctx_service": service, "ctx_port": proc.port})
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    proc.stop()
    return 0


# --- several API processes on one port (FORLOP_HTTP_WORKERS) -------------------------------------------
WORKER_DEATHS_MAX = 5  # workers that may die within WORKER_DEATHS_WINDOW_S and be started again
WORKER_DEATHS_WINDOW_S = 60.0
WORKER_STOP_TIMEOUT_S = 20.0  # after SIGTERM, then SIGKILL (below Kubernetes' 30 s grace period)


class ApiWorkers:
    """N API processes on one port, forked from this one, which supervises them and serves nothing.

    One Python process runs about one core's worth of requests (one GIL); the others serve beside
    it. Each worker is a whole API process (`ServiceProcess`: its own connection pool, token
    cache, metrics registry and outbox relay) that binds its own SO_REUSEPORT socket on the port,
    so the kernel spreads the connections over the workers and no socket or lock is shared. This
    process holds the port with a bound, not listening, socket (port 0 becomes one free port, and
    no other program can take the port while a worker restarts).

    SIGTERM or SIGINT here stops every worker (SIGTERM; SIGKILL after WORKER_STOP_TIMEOUT_S). A
    worker that dies is logged at ERROR and started again; more than WORKER_DEATHS_MAX deaths within
    WORKER_DEATHS_WINDOW_S stop all of them and `run` returns 1, so the process exits non-zero
    instead of serving with fewer workers. A worker gets SIGTERM when this process dies, however
    it dies (Linux' parent-death signal): no orphan keeps the port.
    """

    def __init__(self, runtime: Runtime, count: int, *, service: str = "api", relay_outbox: bool = True) -> None:
        self.runtime = runtime
        self.count = count
        self.service = service
        self.relay_outbox = relay_outbox
        self.children: dict[int, int] = {}  # pid -> worker index
        self.port = 0
        self._stop = threading.Event()

    def run(self) -> int:
        settings = self.runtime.settings
        holder = listen_socket(settings.http_host, settings.http_port, reuse_port=True)
        self.port = holder.getsockname()[1]
        if not (settings.production or settings.jwt_jwks_url or settings.jwt_jwks_file):
            ensure_dev_key(settings)  # made once here: workers making it at once would each keep their own
        # The workers open their own connections: none may be shared across the fork.
        self.runtime.store.dispose()
        freeze_startup_heap()  # what the workers share copy-on-write stays out of their collector's passes
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        deaths: deque[float] = deque()
        status = 0
        try:
            for index in range(self.count):
                self._fork(index, holder)
            log.info("serving", extra={"ctx_service": self.service, "ctx_port": self.port,
                                       "ctx_workers": self.count, "ctx_pids": sorted(self.children)})
            while not self._stop.wait(0.2):
                for pid, code in self._reap():
                    index = self.children.pop(pid)
                    now = time.monotonic()
                    deaths.append(now)
                    while now - deaths[0] > WORKER_DEATHS_WINDOW_S:
                        deaths.popleft()
                    if len(deaths) > WORKER_DEATHS_MAX:
                        log.critical("API worker %d (pid %d) exited with %d: %d workers died within %.0f s; "
                                     "stopping all of them", index, pid, code, len(deaths), WORKER_DEATHS_WINDOW_S)
                        status = 1
                        self._stop.set()
                        break
                    log.error("API worker %d (pid %d) exited with %d; starting it again", index, pid, code)
                    self._fork(index, holder)
        finally:
            self._terminate()
            holder.close()
        return status

    def _fork(self, index: int, holder: socket.socket) -> None:
        parent = os.getpid()
        # No stop signal may reach the new worker before it has its own handler (it would run ours).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the caller's code
                code = 1
                try:
                    holder.close()
                    code = _api_worker(self.runtime, self.service, index, self.port, parent, mask,
                                       self.relay_outbox)
                except BaseException:
                    log.exception("API worker %d failed", index)
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = index

    def _reap(self) -> list[tuple[int, int]]:
        """(pid, exit code; -N: killed by signal N) of the workers that ended."""
        ended = []
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                ended.append((pid, os.waitstatus_to_exitcode(status)))
        return ended

    def _terminate(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_TIMEOUT_S
        while self.children and time.monotonic() < deadline:
            for pid, code in self._reap():
                index = self.children.pop(pid)
                if code != 0:
                    log.warning("API worker %d (pid %d) stopped with %d", index, pid, code)
            time.sleep(0.02)
        for pid, index in self.children.items():
            log.error("API worker %d (pid %d) did not stop within %.0f s; killed", index, pid,
                      WORKER_STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def _api_worker(runtime: Runtime, service: str, index: int, port: int, parent: int, mask: set,
                relay_outbox: bool) -> int:
    """One forked API process: serve on its own SO_REUSEPORT socket until SIGTERM."""
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        return 0
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers (a terminal's ^C reaches all)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    runtime.store.engine.dispose(close=False)  # a fresh pool; the parent's connections (none) stay the parent's
    sock = listen_socket(runtime.settings.http_host, port, reuse_port=True)
    proc = ServiceProcess(runtime, service, relay_outbox=relay_outbox, sock=sock, worker=index).build()
    freeze_startup_heap()
    proc.start()
    done.wait()
    proc.stop()
    return 0


def _die_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent ends, SIGKILL included (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
