"""schemathesis over /openapi.json against the running API, on both stores: no server error, and every
answer as the document says (all of schemathesis' checks; `forlop_devtools.fuzz_api` says which statuses count
as accepting a schema-valid request, and why). The long run is `make fuzz-api`."""

from __future__ import annotations

from forlop_devtools.fuzz_api import ServedApi, fuzz


def test_schemathesis_finds_no_failure(served_api: ServedApi, tmp_path) -> None:
    run = fuzz(served_api, tmp_path / "fuzz", examples=3, seed=21)
    assert not run.errors, run.output
    assert not run.failures, run.output
    assert run.server_errors == 0
    # every operation schemathesis tests (one short of the document's: 24 + vread and both histories per type)
    assert run.operations == 40 and run.test_cases > 1000  # every operation, and many cases each
