"""API fuzzing: schemathesis over ``/openapi.json`` against a running forlop API.

The API is served as `forlop serve api` serves it (waitress, the whole app, a free port on
127.0.0.1) over a store with the contracts' example streams loaded and processed, and called with a
token of every scope. schemathesis runs all its checks: no server error, every status, content
type, header and body as the document says, schema-violating requests rejected, schema-valid ones
accepted, undeclared methods answered 405 with Allow, auth enforced.

Two statuses are accepted for a schema-valid request beside 2xx (``POSITIVE_ACCEPTED``), because a
per-parameter schema cannot state them: 422 for an event the vendor schema allows and forlop's
checks after it reject (a national id's check digits, a code not on the code list, a date before
1900), and 414 for a URL whose parameters are each within their bounds but together longer than
FORLOP_HTTP_MAX_URL_BYTES.

``python -m forlop_devtools.fuzz_api`` (``make fuzz-api``) runs the long version on SQLite and PostgreSQL
and prints its figures; tests/api/test_fuzz.py runs a short one in the suite.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from app.bootstrap import Runtime
from app.serve import ServiceProcess
from forlop.auth import ALL_SCOPES, SCOPE_READ, mint_dev_token
from forlop.clock import FixedClock, parse_time
from forlop.config import Settings, load_settings
from forlop.storage import Store, schema
from forlop.wsgi import listen_socket

ROOT = Path(__file__).resolve().parents[2]  # the repository (the development tools run from a clone)
CONTRACTS = ROOT / "tests" / "fixtures" / "contracts"
AS_OF = parse_time("2026-01-05T10:00:00+01:00")
# 304: a conditional read whose validator matches (If-None-Match: * matches any version); 410: a
# read of a deleted resource. Both are the documented answer to a schema-valid request.
POSITIVE_ACCEPTED = ["2xx", "304", "401", "403", "404", "410", "414", "422"]
NEGATIVE_REJECTED = ["400", "401", "403", "404", "405", "406", "413", "414", "415", "422", "431"]


@dataclass
class ServedApi:
    """A running API: its address, a token with every scope and one with the read scope, its runtime."""

    host: str
    port: int
    token: str
    read_token: str
    rt: Runtime
    process: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                *, auth: bool = True, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """One request on its own connection: (status, headers in lower case, body)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if auth:
                sent.setdefault("Authorization", f"Bearer {self.token}")
            conn.request(method, target, body=body, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def serve_api(store: Store, data_dir: Path, contracts_dir: Path | None = CONTRACTS, **overrides: Any) -> ServedApi:
    """Start the API on 127.0.0.1:<free port>. With `contracts_dir`, load its example streams through
    the API and process them (the pathway and messaging handlers, in this process)."""
    # Bound first, so that the API's links (FORLOP_PUBLIC_BASE_URL) are its real address: a FHIR client
    # follows them, and refuses a next link on another host.
    sock = listen_socket("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    overrides.setdefault("public_base_url", f"http://127.0.0.1:{port}")
    settings: Settings = replace(load_settings({"FORLOP_DATA_DIR": str(data_dir)}), http_host="127.0.0.1",
                                 http_port=port, **overrides)
    rt = Runtime(settings, store, FixedClock(AS_OF))
    process = ServiceProcess(rt, "api", relay_outbox=False, sock=sock).build()
    assert process.server is not None
    thread = threading.Thread(target=process.server.serve_forever, daemon=True)
    thread.start()
    process.threads.append(thread)
    served = ServedApi("127.0.0.1", int(process.server.server_port), mint_dev_token(settings, list(ALL_SCOPES)),
                       mint_dev_token(settings, [SCOPE_READ]), rt, process)
    if contracts_dir is not None:
        for vendor in ("dips", "esp"):
            body = (contracts_dir / f"{vendor}-examples.ndjson").read_bytes()
            status, _, answer = served.request("POST", f"/ingest/{vendor}", body,
                                               {"Content-Type": "application/x-ndjson"})
            if status != 202:
                raise RuntimeError(f"loading the {vendor} examples: {status} {answer[:300]!r}")
        rt.drain_outbox(rt.topic_handlers(["pathway", "messaging"]))
    return served


def stop_api(served: ServedApi) -> None:
    assert served.process.server is not None
    served.process.server.shutdown()
    for thread in served.process.threads:
        thread.join(10)
    for close in served.process.closers:
        close()


@dataclass(frozen=True)
class FuzzRun:
    """What one schemathesis run found, from its JSON report."""

    seconds: float
    operations: int
    test_cases: int
    failures: list[dict[str, Any]] = field(default_factory=list)  # {code, title, count, operations}
    errors: list[Any] = field(default_factory=list)
    output: str = ""

    @property
    def server_errors(self) -> int:
        return sum(f["count"] for f in self.failures if f.get("type") == "ServerError")

    @property
    def failed(self) -> int:
        return sum(f["count"] for f in self.failures)


def known_values(store: Store) -> dict[str, list[str]]:
    """Values that name stored data, for the path and query parameters that need one to find anything."""
    r, m, p = schema.fhir_resources, schema.messages, schema.pathways
    with store.read() as conn:
        return {
            "fhir-ids": sorted(conn.execute(select(r.c.id)).scalars()),
            "message-ids": sorted(conn.execute(select(m.c.id)).scalars()) or ["none"],
            "municipalities": sorted(set(conn.execute(select(p.c.municipality)).scalars())) or ["0301"],
            "units": sorted(set(conn.execute(select(p.c.unit_her_id)).scalars())) or ["1"],
        }


def _config(values: dict[str, list[str]]) -> str:
    def strings(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in items) + "]"

    return "\n".join([
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {strings(POSITIVE_ACCEPTED)}",
        "[checks.negative_data_rejection]",
        f"expected-statuses = {strings(NEGATIVE_REJECTED)}",
        "[parameters]",
        '"path.rid" = { dictionary = "fhir-ids", probability = 0.5 }',
        '"path.msg_id" = { dictionary = "message-ids", probability = 0.5 }',
        '"path.kommunenummer" = { dictionary = "municipalities", probability = 0.5 }',
        '"query.unit" = { dictionary = "units", probability = 0.5 }',
        "[dictionaries]",
        *(f"{name} = {{ values = {strings(items)} }}" for name, items in values.items()),
        "",
    ])


def fuzz(served: ServedApi, workdir: Path, *, examples: int, seed: int, max_time: int | None = None,
         phases: str = "coverage,fuzzing,stateful") -> FuzzRun:
    """One schemathesis run (all checks) against `served`; its figures and failures."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "schemathesis.toml"
    config.write_text(_config(known_values(served.rt.store)))
    report = workdir / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
               f"{served.url}/openapi.json", "-H", f"Authorization: Bearer {served.token}",
               "--checks", "all", "--max-examples", str(examples), "--seed", str(seed), "--workers", "1",
               "--phases", phases, "--generation-database", "none", "--no-color",
               "--report", "json", "--report-json-path", str(report), "--request-timeout", "30"]
    if max_time is not None:
        command += ["--max-time", str(max_time)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=3600)
    if not report.exists():
        raise RuntimeError(f"schemathesis wrote no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(report.read_text())
    return FuzzRun(seconds=round(data["running_time"], 1), operations=data["operations"]["tested"],
                   test_cases=data["test_cases"]["generated"], failures=data["failures"], errors=data["errors"],
                   output=done.stdout[-20000:])


POSTGRES_URL = os.environ.get("FORLOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def _fresh_store(kind: str, workdir: Path) -> Iterator[Store | None]:
    """An empty, migrated store: a SQLite file, or its own schema in the PostgreSQL test database."""
    if kind == "sqlite":
        store = Store(f"sqlite:///{workdir / 'fuzz.db'}")
        store.migrate()
        try:
            yield store
        finally:
            store.dispose()
        return
    admin = create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1),
                          connect_args={"connect_timeout": 3})
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:
        print(f"PostgreSQL at {POSTGRES_URL} not reachable ({type(exc).__name__}): skipped", file=sys.stderr)
        admin.dispose()
        yield None
        return
    sep = "&" if "?" in POSTGRES_URL else "?"
    store = Store(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}")
    store.migrate()
    try:
        yield store
    finally:
        store.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forlop_devtools.fuzz_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="test cases per operation and phase (default 200)")
    parser.add_argument("--seed", type=int, default=2126)
    parser.add_argument("--max-time", type=int, default=None, help="seconds per store, at most")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="forlop-fuzz-") as tmp:
        for kind in args.stores.split(","):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            with _fresh_store(kind, workdir) as store:
                if store is None:
                    continue
                served = serve_api(store, workdir)
                started = time.perf_counter()
                try:
                    run = fuzz(served, workdir, examples=args.examples, seed=args.seed, max_time=args.max_time)
                finally:
                    stop_api(served)
                results[kind] = {"examples": args.examples, "seed": args.seed, "operations": run.operations,
                                 "test_cases": run.test_cases, "failures": run.failed,
                                 "server_errors": run.server_errors, "errors": len(run.errors),
                                 "seconds": round(time.perf_counter() - started, 1),
                                 "failure_codes": [f"{f['code']} {f['title']} ({', '.join(f['operations'])})"
                                                   for f in run.failures]}
                if run.failures or run.errors:
                    print(run.output, file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'store':<11} {'examples':>8} {'operations':>10} {'test cases':>10} {'failures':>8} "
              f"{'5xx':>4} {'seconds':>8}")
        for kind, r in results.items():
            print(f"{kind:<11} {r['examples']:>8} {r['operations']:>10} {r['test_cases']:>10} {r['failures']:>8} "
                  f"{r['server_errors']:>4} {r['seconds']:>8}")
            for line in r["failure_codes"]:
                print(f"  {line}")
    return 1 if any(r["failures"] or r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
