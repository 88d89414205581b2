"""The whole API served by waitress on a free port (as `forlop serve api` serves it), over either store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from forlop.storage import Store
from forlop_devtools.fuzz_api import ServedApi, serve_api, stop_api


@pytest.fixture
def served_api(store: Store, tmp_path: Path, contracts_dir: Path) -> Iterator[ServedApi]:
    """The API over `store` (both kinds), with the contracts' examples loaded and processed."""
    served = serve_api(store, tmp_path, contracts_dir)
    try:
        yield served
    finally:
        stop_api(served)


def outcome(body: bytes) -> dict:
    """An OperationOutcome answer, parsed (fails the test if it is not one)."""
    parsed = json.loads(body)
    assert parsed["resourceType"] == "OperationOutcome", parsed
    return parsed
