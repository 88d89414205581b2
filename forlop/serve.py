"""One service per process (`forlop serve ingest|pathway|messaging|api`), as Kubernetes runs them.

Every process serves /healthz, /readyz and /metrics on FORLOP_HTTP_PORT; the api
process serves the whole API there. Each also relays its outbox to Kafka.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from forlop.auth import SCOPE_READ, TokenVerifier
from forlop.kafka import ConsumerLoop, client_options
from forlop.metrics import refresh_gauges
from forlop.runtime import PeriodicWorker, Runtime, start_thread
from forlop.wsgi import HTTP_THREADS, HttpServer, make_http_server

log = logging.getLogger(__name__)

SERVICES = ("ingest", "pathway", "messaging", "api")


def broker_check(runtime: Runtime) -> Callable[[], str | None]:
    def check() -> str | None:
        from kafka import KafkaAdminClient

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

    def readiness(self) -> list[Callable[[], str | None]]:
        checks: list[Callable[[], str | None]] = []
        for w in self.workers:
            if isinstance(w, ConsumerLoop):
                checks.append(
                    lambda w=w: None if w.joined.is_set() else f"{w.service} consumer has not joined its group yet"
                )
        return checks

    def build(self) -> ServiceProcess:
        rt = self.runtime
        relay = None
        if self.relay_outbox:
            outbox = rt.outbox_relay(self.service)
            self.closers.append(outbox.producer.close)
            relay = PeriodicWorker("outbox-relay", outbox.run_once, 0.2)
        if self.service in ("ingest", "pathway", "messaging"):
            self.workers.append(rt.consumer(self.service, after_commit=relay.wake if relay else None))
        if self.service == "pathway":
            from services.pathway.service import refresh_queued, scan

            def scan_step() -> int:
                # first the pathways a replay stored but did not derive (it was stopped before the end)
                with rt.store.transaction() as conn:
                    queued = len(refresh_queued(conn, rt.clock(), rt.pathway_deps).refreshed)
                with rt.store.transaction() as conn:
                    return queued + len(scan(conn, rt.clock(), rt.pathway_deps).refreshed)

            self.workers.append(PeriodicWorker("deadline-scanner", scan_step, rt.settings.scan_interval_s))
        if self.service == "messaging":
            self.workers.append(PeriodicWorker("message-relay", rt.messaging.relay.run_once, 1.0))
            if hasattr(rt.messaging, "poll_receipts"):
                self.workers.append(PeriodicWorker("apprec-inbox", rt.messaging.poll_receipts, 1.0))
        if relay is not None:
            self.workers.append(relay)
        self.workers.append(PeriodicWorker("metrics", lambda: refresh_gauges(rt.store, rt.clock()), 15.0))
        app = self.api_app() if self.service == "api" else self.probe_app()
        # the API's worker threads; a consumer service's server only answers probes and /metrics
        threads = HTTP_THREADS if self.service == "api" else 2
        self.server = make_http_server(rt.settings.http_host, rt.settings.http_port, app, threads)
        return self

    def api_app(self) -> Flask:
        from services.api.app import ApiDeps, create_app
        from services.messaging.api import messages_bp
        from services.pathway.api import pathway_bp

        blueprints = [(messages_bp, SCOPE_READ), (pathway_bp(self.runtime), SCOPE_READ)]
        deps = ApiDeps(
            self.runtime.settings,
            self.runtime.store,
            self.runtime.clock,
            TokenVerifier(self.runtime.settings),
            readiness=[],
            blueprints=blueprints,
        )
        return create_app(deps)

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

    Those objects live as long as the process; a full collection walking them took ~50 ms, a
    pause of every request in flight every few thousand requests (the API's p99).
    """
    gc.collect()
    gc.freeze()


def serve_forever(runtime: Runtime, service: str) -> None:
    runtime.store.check_schema()
    runtime.ensure_topics()
    proc = ServiceProcess(runtime, service).build()
    freeze_startup_heap()
    proc.start()
    log.info("serving", extra={"ctx_service": service, "ctx_port": proc.port})
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    proc.stop()
