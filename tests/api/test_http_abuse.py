"""The API under abuse, over a real waitress server (issue #21): every hostile request gets a 4xx
OperationOutcome naming its problem, never a 500, and nothing of a refused batch is kept."""

from __future__ import annotations

import json
import socket

import pytest
from sqlalchemy import func, select, text

from forlop.storage import Store, schema
from forlop_devtools.fuzz_api import ServedApi, serve_api, stop_api
from tests.api.conftest import outcome


@pytest.fixture
def examples(contracts_dir) -> dict[str, list[dict]]:
    return {v: [json.loads(x) for x in (contracts_dir / f"{v}-examples.ndjson").read_text().splitlines()]
            for v in ("dips", "esp")}


def _inbound(served: ServedApi) -> int:
    with served.rt.store.read() as conn:
        return conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()


def _post(served: ServedApi, vendor: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    status, headers, answer = served.request("POST", f"/ingest/{vendor}", body, {"Content-Type": ctype})
    assert headers["content-type"] == "application/fhir+json" or status == 202, (status, answer[:300])
    return status, json.loads(answer)


def _with(event: dict, dotted: str, value: object) -> dict:
    out = json.loads(json.dumps(event))
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


# Bodies that were accepted with 202 and stalled the pipeline, or answered 500 (the issue's list).
HOSTILE_EVENTS = [
    ("dips", "recordedTime", "0001-01-01T00:00:00+14:00", "date-range"),
    ("dips", "eventTime", "0001-01-01T00:00:00+01:00", "date-range"),
    ("esp", "registrertTid", "01.01.0001 00:00", "date-range"),
    ("dips", "unit.name", "x" * 2_000_000, "max-string-length"),
    ("dips", "unit.name", "x" * 201, "maxLength"),
    ("dips", "pathway.id", "PPR-\x00", "nul-character"),
    ("dips", "patient.municipality", "٥٠٠١", "pattern"),  # Arabic-Indic digits
    ("dips", "patient.municipality", "50²1", "pattern"),
    ("dips", "patient.nationalId", "1383703331９", "pattern"),  # a fullwidth digit
    ("esp", "enhetHerId", "８140712", "pattern"),
    ("dips", "source.organisation.orgNumber", "98397489٩", "pattern"),
]


@pytest.mark.parametrize(("vendor", "field", "value", "rule"), HOSTILE_EVENTS,
                         ids=[f"{v}-{f}-{r}" for v, f, _, r in HOSTILE_EVENTS])
def test_hostile_field_values_are_422_naming_the_field_and_rule(served_api, examples, vendor, field, value,
                                                                rule) -> None:
    before = _inbound(served_api)
    status, body = _post(served_api, vendor, _dumps(_with(examples[vendor][0], field, value)))
    assert status == 422
    issues = outcome(json.dumps(body).encode())["issue"]
    assert any(i.get("expression") == [field] and f"(rule: {rule})" in i["diagnostics"] for i in issues), issues
    assert len(json.dumps(body)) < 10_000  # a 2 MB value is named, not echoed
    assert _inbound(served_api) == before


@pytest.mark.parametrize("moment", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_consent_time_that_overflows_in_utc_is_rejected(served_api, examples, moment) -> None:
    consent = next(e for e in examples["dips"] if e["eventType"] == "consent.changed")
    status, body = _post(served_api, "dips", _dumps(dict(consent, eventTime=moment)))
    assert status == 422 and body["issue"][0]["expression"] == ["eventTime"]


def test_an_extra_field_nested_980_deep_is_rejected_with_its_path(served_api, examples) -> None:
    event = examples["dips"][0]
    body = json.dumps(event)[:-1].encode() + b', "extra": ' + b"[" * 980 + b"]" * 980 + b"}"
    status, answer = _post(served_api, "dips", body)
    assert status == 422
    issue = answer["issue"][0]
    assert issue["expression"][0].startswith("extra.0.0") and "(rule: max-depth)" in issue["diagnostics"]


@pytest.mark.parametrize(("body", "says"), [
    (b'{"eventId": ' + b"9" * 5000 + b"}", "number out of range"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    (b'{"pathway": {"id": "\\ud800"}}', "not valid Unicode"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
@pytest.mark.parametrize("ctype", ["application/json", "application/x-ndjson"])
def test_bodies_json_cannot_carry_are_400_saying_why(served_api, body, says, ctype) -> None:
    status, answer = _post(served_api, "dips", body, ctype)
    assert status == 400 and says in answer["issue"][0]["diagnostics"]


def test_twenty_thousand_empty_records_are_refused_at_once(served_api) -> None:
    status, answer = _post(served_api, "dips", b"[" + b",".join([b"{}"] * 20_000) + b"]")
    assert status == 413 and "at most 1000" in answer["issue"][0]["diagnostics"]
    nd_status, _ = _post(served_api, "dips", b"\n".join([b"{}"] * 20_000), "application/x-ndjson")
    assert nd_status == 413


def test_a_422_lists_the_first_100_problems_and_counts_the_rest(served_api) -> None:
    status, headers, answer = served_api.request("POST", "/ingest/esp", b"[" + b",".join([b"{}"] * 1000) + b"]",
                                                 {"Content-Type": "application/json"})
    assert status == 422 and len(answer) < 50_000
    issues = json.loads(answer)["issue"]
    assert len(issues) == 101 and all(i["severity"] == "error" for i in issues[:100])
    assert issues[100]["severity"] == "information" and "records were not checked" in issues[100]["diagnostics"]


def test_search_parameters_are_bounded_and_strict(served_api) -> None:
    def get(target: str) -> tuple[int, dict]:
        status, _, body = served_api.request("GET", target)
        return status, json.loads(body)

    status, body = get("/fhir/EpisodeOfCare?" + "&".join(["status=active"] * 1100))  # 15 KB: the URL limit first
    assert status == 414 and body["issue"][0]["code"] == "too-costly"
    for target, name in [
        ("/fhir/EpisodeOfCare?" + "&".join(["status=active"] * 160), "status"),
        ("/fhir/Task?focus=" + ",".join(f"EpisodeOfCare/{i}" for i in range(101)), "focus"),
        ("/fhir/Task?_offset=9223372036854775808", "_offset"),
        ("/fhir/Task?_offset=2147483648", "_offset"),
        ("/fhir/Task?_offset=10001", "_offset"),
        ("/fhir/Task?_count=-1", "_count"),
        ("/fhir/Task?_count=%C2%B2", "_count"),  # "²"
        ("/fhir/Task?_count=%D9%A3", "_count"),  # Arabic-Indic three
        ("/fhir/Task?_count=2147483648", "_count"),
        ("/fhir/Task?_count=1&_count=2", "_count"),
        ("/worklist?unit=8140712&limit=%C2%B2", "limit"),  # "²".isdigit() is true
        ("/worklist?unit=%D9%A8140712", "unit"),
        ("/municipalities/%D9%A5001/pathways", "kommunenummer"),
        ("/indicators?from=0001-01-01", "from"),
        ("/messages?_count=-5", "_count"),
        ("/messages?_count=%C2%B2", "_count"),
    ]:
        status, body = get(target)
        assert status == 400 and body["issue"][0]["expression"] == [name], (target[:80], body)
    assert get("/fhir/EpisodeOfCare?" + "&".join(["status=active"] * 10))[0] == 200
    page = get("/fhir/Task?_count=1000")[1]
    assert page["resourceType"] == "Bundle" and len(page["entry"]) <= 500
    assert get("/fhir/Task?_offset=10000")[0] == 200


def test_nul_in_an_id_or_a_query_value_is_a_4xx_on_both_stores(served_api) -> None:
    for target, expected in [
        ("/fhir/EpisodeOfCare/abc%00def", 404),
        ("/fhir/Task/%00", 404),
        ("/messages/%00", 404),
        ("/municipalities/%00%00%00%00/pathways", 404),
        ("/fhir/EpisodeOfCare?identifier=a%00b", 400),
        ("/fhir/Task?_cursor=%00", 400),
        ("/messages?pathway=%00", 400),
        ("/worklist?unit=%00", 400),
        ("/indicators?groupBy=%00", 400),
        ("/fhir/EpisodeOfCare?%00=x", 400),
    ]:
        status, _, body = served_api.request("GET", target)
        assert status == expected, (target, body)
        outcome(body)
    # not UTF-8 once percent-decoded (a lone surrogate's bytes): read as U+FFFD, matches nothing
    status, _, body = served_api.request("GET", "/fhir/EpisodeOfCare?identifier=%ED%A0%80")
    assert status == 200 and json.loads(body)["entry"] == []
    status, _, _ = served_api.request("GET", "/fhir/EpisodeOfCare/%ED%A0%80")
    assert status == 404


def test_too_many_search_values_for_the_url_or_for_the_parameter(sqlite_store: Store, tmp_path) -> None:
    """14,000 ids in Task?focus=: the URL limit answers first (414); with room for such a URL, the
    values-per-parameter limit does (400); both name their limit."""
    ids = ",".join(f"EpisodeOfCare/{i:016x}" for i in range(14_000))
    served = serve_api(sqlite_store, tmp_path, None)
    try:
        status, _, body = served.request("GET", f"/fhir/Task?focus={ids}")
        assert status == 414 and "at most 8192" in outcome(body)["issue"][0]["diagnostics"]
    finally:
        stop_api(served)
    roomy = serve_api(sqlite_store, tmp_path, None, http_max_url_bytes=1_000_000, http_max_header_bytes=8192)
    try:
        status, _, body = roomy.request("GET", f"/fhir/Task?focus={ids}")
        issue = outcome(body)["issue"][0]
        assert status == 400 and issue["expression"] == ["focus"] and "at most 100" in issue["diagnostics"]
    finally:
        stop_api(roomy)


def test_url_header_and_body_limits_answer_as_operation_outcomes(sqlite_store: Store, tmp_path) -> None:
    served = serve_api(sqlite_store, tmp_path, None, http_max_body_bytes=100_000)
    try:
        for target, headers, expected in [
            ("/fhir/Task?identifier=" + "x" * 300_000, {}, 414),  # past waitress's own limit
            ("/fhir/Task?identifier=" + "x" * 12_000, {}, 414),  # past the app's
            ("/healthz", {"X-Big": "y" * 300_000}, 431),
            ("/healthz", {f"X-H{i}": "y" * 1000 for i in range(70)}, 431),
        ]:
            status, got, body = served.request("GET", target, headers=headers)
            assert status == expected and got["content-type"] == "application/fhir+json", (expected, body[:200])
            assert outcome(body)["issue"][0]["code"] == "too-costly"
        status, got, body = served.request("POST", "/ingest/dips", b"[" + b" " * 200_000 + b"]",
                                           {"Content-Type": "application/json"})
        assert status == 413 and "larger than 100000 bytes" in outcome(body)["issue"][0]["diagnostics"]
        with socket.create_connection((served.host, served.port), timeout=10) as sock:  # chunked, no length
            sock.sendall(b"POST /ingest/dips HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/json\r\n\r\n"
                         + (b"1000\r\n" + b" " * 4096 + b"\r\n") * 25 + b"0\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
            assert answer.startswith(b"HTTP/1.1 413") and b"larger than 100000 bytes" in answer
        with socket.create_connection((served.host, served.port), timeout=10) as sock:  # not HTTP at all
            sock.sendall(b"GARBAGE\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # until the server closes
            assert answer.startswith(b"HTTP/1.0 400") and b'"resourceType":"OperationOutcome"' in answer
    finally:
        stop_api(served)


def test_idle_connections_do_not_keep_the_probes_out(sqlite_store: Store, tmp_path) -> None:
    """waitress's default of 100 connections let 100 idle clients make /healthz time out."""
    served = serve_api(sqlite_store, tmp_path, None)
    idle = []
    try:
        for _ in range(150):
            idle.append(socket.create_connection((served.host, served.port), timeout=5))
        status, _, body = served.request("GET", "/healthz", auth=False, timeout=10)
        assert status == 200 and json.loads(body) == {"status": "alive"}
    finally:
        for sock in idle:
            sock.close()
        stop_api(served)


def test_a_statement_past_the_api_timeout_is_cancelled_and_answered_503(postgres_store: Store, tmp_path) -> None:
    """A genuinely slow query through the read path (the resources' table behind a view that sleeps):
    the server cancels it at the API's statement timeout, the client gets a 503 OperationOutcome with
    Retry-After, and no backend is left running it."""
    store = postgres_store
    with store.transaction() as conn:
        conn.execute(text("ALTER TABLE fhir_resources RENAME TO fhir_resources_data"))
        conn.execute(text("CREATE VIEW fhir_resources AS SELECT * FROM fhir_resources_data "
                          "WHERE (SELECT true FROM pg_sleep(3))"))
    served = serve_api(store, tmp_path, None, api_statement_timeout_ms=300)
    try:
        status, headers, body = served.request("GET", "/fhir/Patient/abc", auth=True)
        assert status == 503 and headers["retry-after"].isdigit()
        issue = outcome(body)["issue"][0]
        assert issue["code"] == "timeout" and "300 ms" in issue["diagnostics"]
        with store.read() as conn:
            running = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                        "AND query LIKE '%fhir_resources%' AND pid <> pg_backend_pid()")).scalar()
        assert running == 0
        status, _, _ = served.request("GET", "/readyz", auth=False)
        assert status == 200  # the API's other statements are unaffected
    finally:
        stop_api(served)


@pytest.mark.parametrize("element", [b"null", b"true", b"7", b"[]", b'"text"', b'"{\\"eventId\\": 1}"'])
def test_an_array_element_that_is_not_an_object_is_named(served_api, element) -> None:
    status, body = _post(served_api, "dips", b"[{}, " + element + b"]")
    assert status == 422
    assert any(i.get("expression") == ["[1].$"] and "(rule: type)" in i["diagnostics"] for i in body["issue"]), body
