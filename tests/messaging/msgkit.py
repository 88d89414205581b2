"""Helpers shared by the messaging tests (importable as `msgkit`; conftest holds the fixtures)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from forlop.events import PathwayEvent
from services.ingest.normalise import parse_vendor_event

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def id_factory(prefix: int = 0) -> Callable[[], str]:
    counter = iter(range(1, 10**9))
    return lambda: str(uuid.UUID(int=(prefix << 64) + next(counter)))


def load_examples(contracts: Path, source: str) -> dict[str, list[PathwayEvent]]:
    by_pathway: dict[str, list[PathwayEvent]] = {}
    path = contracts / f"{source}-examples.ndjson"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ev = parse_vendor_event(source, json.loads(line))
            by_pathway.setdefault(ev.pathway_id, []).append(ev)
    return by_pathway


def payload(events: Iterable[PathwayEvent], status: dict[str, Any] | None = None) -> dict[str, Any]:
    evs = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    first = evs[0]
    return {
        "pathway_key": first.pathway_key,
        "pathway_id": first.pathway_id,
        "source": first.source.value,
        "status": status or {"phase": "treatment", "episode_status": "active"},
        "events": [e.to_dict() for e in evs],
        "changed_at": NOW.isoformat(),
    }


class LocalHttpServer:
    """A real HTTP server on 127.0.0.1 (ephemeral port) in a thread; `handle` answers each request.

    handle(method, path, body) -> (status, content-type, body). Every request is recorded.
    """

    def __init__(self, handle: Callable[[str, str, bytes], tuple[int, str, bytes]]) -> None:
        server = self
        self.handle = handle
        self.requests: list[tuple[str, str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.command, self.path, body))
                status, ctype, out = server.handle(self.command, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _any  # noqa: N815 - http.server's naming

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


class AddressRegister:
    """A local stand-in for the national address register: GET /municipalities/{nr}, POST /gp-lookup.

    `municipalities` and `gps` (national id -> entry) may be changed while it runs; `down` answers 503.
    """

    def __init__(self) -> None:
        self.municipalities: dict[str, dict[str, Any]] = {}
        self.gps: dict[str, dict[str, Any]] = {}
        self.down = False
        self.server = LocalHttpServer(self._answer)

    def _answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.down:
            return 503, "text/plain", b"unavailable"
        found: dict[str, Any] | None = None
        if method == "GET" and path.startswith("/municipalities/"):
            found = self.municipalities.get(path.rsplit("/", 1)[1])
        elif method == "POST" and path == "/gp-lookup":
            found = self.gps.get(json.loads(body or b"{}").get("nationalId", ""))
        if found is None:
            return 404, "application/json", b'{"error": "not found"}'
        return 200, "application/json", json.dumps(found).encode()

    @property
    def url(self) -> str:
        return self.server.base

    def stop(self) -> None:
        self.server.stop()
