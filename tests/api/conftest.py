"""The whole API served by waitress on a free port (as `forlop serve api` serves it), over either store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app.bootstrap import Runtime
from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, TokenVerifier, mint_dev_token
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store
from forlop_devtools.fuzz_api import ServedApi, serve_api, stop_api
from services.api.app import ApiDeps, create_app

AS_OF = parse_time("2026-01-05T10:00:00+01:00")


@pytest.fixture
def served_api(store: Store, tmp_path: Path, contracts_dir: Path) -> Iterator[ServedApi]:
    """The API over `store` (both kinds), with the contracts' examples loaded and processed."""
    served = serve_api(store, tmp_path, contracts_dir)
    try:
        yield served
    finally:
        stop_api(served)


def loaded_client(store: Store, tmp_path: Path, contracts_dir: Path, **env: str) -> FlaskClient:
    """A Flask test client of the API (settings from `env`, the clock at AS_OF) with the contracts'
    examples of both vendors posted and derived; `.rt` its runtime, `.read` a read-scope header."""
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), **env})
    rt = Runtime(settings, store, FixedClock(AS_OF))
    client = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings))).test_client()
    write = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_WRITE_EVENTS])}"}
    for vendor in ("dips", "esp"):
        body = (contracts_dir / f"{vendor}-examples.ndjson").read_bytes()
        assert client.post(f"/ingest/{vendor}", data=body,
                           headers=write | {"Content-Type": "application/x-ndjson"}).status_code == 202
    rt.drain_outbox(rt.topic_handlers(["pathway"]))
    client.rt = rt  # type: ignore[attr-defined]
    client.read = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"}  # type: ignore[attr-defined]
    return client


def outcome(body: bytes) -> dict:
    """An OperationOutcome answer, parsed (fails the test if it is not one)."""
    parsed = json.loads(body)
    assert parsed["resourceType"] == "OperationOutcome", parsed
    return parsed
