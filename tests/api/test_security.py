"""What every answer carries and every client is held to: security headers, the correlation id, per-client
rate limits (429), and no national id in any log line or error body, whatever the client sends."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from forlop.auth import ALL_SCOPES, mint_dev_token
from forlop.logging import JsonFormatter, MaskingFilter
from forlop.storage import Store
from forlop_devtools.fuzz_api import ServedApi, serve_api, stop_api
from services.api.security import RateLimiter, correlation_id_of
from tests.api.conftest import outcome
from tests.api.test_audit import audit_rows
from tests.conftest import production_logs

ELEVEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")
MASKED = re.compile(r"\*{11}#[a-p]{12}")  # what the masking leaves (its digest in letters: never a run of digits)
HOSTILE_ID = "15907918537"  # a national id (synthetic) sent where none belongs


def test_security_headers_on_data_errors_and_health(served_api: ServedApi):
    for target, status in (("/fhir/Task?_count=1", 200), ("/fhir/Task/nothing", 404), ("/healthz", 200),
                           ("/worklist", 400)):
        got, headers, _ = served_api.request("GET", target)
        assert got == status, target
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"] == "default-src 'none'"
        assert "strict-transport-security" not in headers  # plain http


def test_hsts_when_the_public_scheme_is_https(sqlite_store: Store, tmp_path: Path):
    served = serve_api(sqlite_store, tmp_path, None, public_scheme="https")
    try:
        for target in ("/fhir/Task?_count=1", "/nothing"):
            _, headers, _ = served.request("GET", target)
            assert headers["strict-transport-security"].startswith("max-age=")
    finally:
        stop_api(served)


@pytest.mark.parametrize("sent,kept", [
    ("req-2026.01.05:abc_1", True),
    ("x" * 64, True),
    ("x" * 65, False),  # too long
    ("ab cd", False),  # a space
    ("æøå", False),  # outside the charset
    (f"c-{HOSTILE_ID}", False),  # a national id inside
])
def test_the_correlation_id_is_kept_only_when_safe(sent: str, kept: bool):
    used = correlation_id_of(sent)
    assert (used == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:\-]{1,64}", used)


def test_the_correlation_id_used_is_echoed(served_api: ServedApi, store: Store):
    _, headers, _ = served_api.request("GET", "/fhir/Task?_count=1", headers={"X-Correlation-Id": "abc-1"})
    assert headers["x-correlation-id"] == "abc-1" and audit_rows(store)[-1].record.correlation_id == "abc-1"
    _, headers, _ = served_api.request("GET", "/fhir/Task?_count=1", headers={"X-Correlation-Id": HOSTILE_ID})
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-correlation-id"])


def test_the_rate_limiter_is_a_token_bucket_per_client():
    now = [100.0]
    limiter = RateLimiter(rate=2, burst=3, now=lambda: now[0])
    assert [limiter.wait_s("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.wait_s("a") == pytest.approx(0.5)  # one token at 2/s
    assert limiter.wait_s("b") == 0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.wait_s("a") == 0 and limiter.wait_s("a") > 0
    now[0] += 60
    assert [limiter.wait_s("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, not beyond


@pytest.fixture
def limited_api(sqlite_store: Store, tmp_path: Path) -> Iterator[ServedApi]:
    served = serve_api(sqlite_store, tmp_path, None, rate_limit_per_s=1, rate_limit_burst=2)
    try:
        yield served
    finally:
        stop_api(served)


def test_a_client_past_its_rate_gets_429_with_retry_after(limited_api: ServedApi, sqlite_store: Store):
    answers = [limited_api.request("GET", "/fhir/Task?_count=1") for _ in range(5)]
    statuses = [a[0] for a in answers]
    assert statuses[:2] == [200, 200] and 429 in statuses  # a burst of 2, then 1/s
    status, headers, body = next(a for a in answers if a[0] == 429)
    assert int(headers["retry-after"]) >= 1 and outcome(body)["issue"][0]["code"] == "throttled"
    assert headers["cache-control"] == "no-store"
    assert len(audit_rows(sqlite_store)) == statuses.count(200)  # a refused request is not recorded
    other = mint_dev_token(limited_api.rt.settings, list(ALL_SCOPES), subject="another-client")
    assert limited_api.request("GET", "/fhir/Task?_count=1", headers={"Authorization": f"Bearer {other}"})[0] == 200


def test_no_log_line_or_error_body_carries_a_national_id(served_api: ServedApi, contracts_dir: Path):
    esp = json.loads((contracts_dir / "esp-examples.ndjson").read_text().splitlines()[0])
    hostile_events = [
        {**esp, "meldingsId": HOSTILE_ID, "fodselsnummer": "15907918538"},  # bad check digits: 422
        {**esp, "meldingsId": f"m {HOSTILE_ID}\n", "bostedskommune": HOSTILE_ID},
        {**esp, "meldingsId": "x" * 90 + HOSTILE_ID},
    ]
    bodies: list[bytes] = []
    with production_logs(logging.DEBUG) as stream:
        hostile = {"X-Correlation-Id": HOSTILE_ID}
        for target in (f"/fhir/Patient/{HOSTILE_ID}", f"/fhir/EpisodeOfCare?identifier={HOSTILE_ID}&x={HOSTILE_ID}",
                       f"/fhir/EpisodeOfCare?_count={HOSTILE_ID}", f"/worklist?unit={HOSTILE_ID}99",
                       f"/municipalities/{HOSTILE_ID}/pathways", f"/messages/{HOSTILE_ID}",
                       f"/messages?status={HOSTILE_ID}", f"/no-such-route/{HOSTILE_ID}",
                       f"/fhir/AuditEvent?patient={HOSTILE_ID}&date={HOSTILE_ID}"):
            status, _, body = served_api.request("GET", target, headers=hostile)
            assert status >= 400, target
            bodies.append(body)
        for event in hostile_events:
            status, _, body = served_api.request("POST", "/ingest/esp", json.dumps(event).encode(),
                                                 {"Content-Type": "application/json", **hostile})
            assert status == 422, body
            bodies.append(body)
        status, _, body = served_api.request("POST", "/ingest/esp", f'{{"x": {HOSTILE_ID}'.encode(),
                                             {"Content-Type": "application/json", **hostile})
        assert status == 400
        bodies.append(body)
        status, _, body = served_api.request("DELETE", f"/fhir/Patient/{HOSTILE_ID}", headers=hostile)
        assert status == 405
        bodies.append(body)
        logged = stream.getvalue()
    assert logged.count("request answered") == len(bodies)  # each request was logged, path and all
    for text in [logged, *(b.decode() for b in bodies)]:
        assert not ELEVEN_DIGITS.search(MASKED.sub("", text)), text[:500]


def test_a_logged_correlation_id_is_masked():
    """An eSP meldingsId is the correlation id of the pathway service's lines: masked like the rest."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "stored", None, None)
    record.correlation_id = f"esp:{HOSTILE_ID}"
    MaskingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert HOSTILE_ID not in line and json.loads(line)["correlation_id"].startswith("esp:***********#")
