"""The audit trail through the served API, on both stores: one record per allowed request, none per
refused one, written before the answer (503 when it cannot be), readable as FHIR AuditEvent."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import func, select, text

from forlop import audit
from forlop.auth import SCOPE_READ, mint_dev_token
from forlop.fhir.ids import patient_id
from forlop.storage import Store, schema
from forlop_devtools.fuzz_api import ServedApi
from tests.api.conftest import outcome

NATIONAL_ID = "15907918537"  # the contracts' first eSP patient (synthetic)
SID_FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


def audit_rows(store: Store) -> list[audit.Stored]:
    with store.read() as conn:
        return list(audit.all_records(conn))


def _get(api: ServedApi, target: str, token: str | None = None, headers: dict[str, str] | None = None):
    sent = {"Authorization": f"Bearer {token or api.token}", **(headers or {})}
    return api.request("GET", target, headers=sent)


def _a_message_id(store: Store) -> str:
    with store.read() as conn:
        return conn.execute(select(schema.messages.c.id).order_by(schema.messages.c.id).limit(1)).scalar_one()


def test_every_allowed_request_is_recorded_once_and_no_refused_one(served_api: ServedApi, store: Store):
    api = served_api
    loaded = audit_rows(store)
    assert len(loaded) == 2 and all(r.record.method == "POST" and r.record.status == 202 for r in loaded)
    assert patient_id(NATIONAL_ID) in loaded[1].record.patients  # the eSP batch names its patients
    message = _a_message_id(store)
    episode = json.loads(_get(api, f"/fhir/EpisodeOfCare?patient.identifier={SID_FNR}|{NATIONAL_ID}")[2])
    episode_id = episode["entry"][0]["resource"]["id"]
    routes = [
        f"/fhir/EpisodeOfCare?patient.identifier={SID_FNR}|{NATIONAL_ID}",
        f"/fhir/EpisodeOfCare/{episode_id}",
        f"/fhir/Patient/{patient_id(NATIONAL_ID)}",
        "/fhir/Task?_count=5",
        "/fhir/Patient/no-such-patient",  # allowed, answered 404: recorded with its outcome
        "/worklist?unit=8140712",
        "/municipalities/5001/pathways",
        "/messages?_count=3",
        f"/messages/{message}",
        f"/fhir/AuditEvent?patient={NATIONAL_ID}",
    ]
    before = len(audit_rows(store))
    for n, route in enumerate(routes, start=1):
        status, headers, body = _get(api, route)
        assert status in (200, 404), (route, status, body[:200])
        rows = audit_rows(store)
        assert len(rows) == before + n, route
        record = rows[-1].record
        assert record.status == status and record.method == "GET" and record.client_id == "dev-client"
        assert record.purpose == "TREAT" and record.path == route.split("?")[0]
    by_route = {r.record.path: r.record for r in audit_rows(store)[before:]}
    me = patient_id(NATIONAL_ID)
    assert me in by_route["/fhir/EpisodeOfCare"].patients
    assert f"EpisodeOfCare/{episode_id}" in by_route["/fhir/EpisodeOfCare"].resources
    assert me in by_route[f"/fhir/EpisodeOfCare/{episode_id}"].patients
    assert by_route[f"/fhir/Patient/{me}"].patients == (me,)
    assert by_route["/fhir/Patient/no-such-patient"].patients == ()
    assert me in by_route["/worklist"].patients
    assert by_route[f"/messages/{message}"].resources == (f"messages/{message}",)
    assert by_route[f"/messages/{message}"].patients  # resolved from the message's pathway
    assert by_route["/fhir/AuditEvent"].patients == (me,)

    # Refused: no token, a bad token, a token without the scope. Aggregates carry no personal data.
    before = len(audit_rows(store))
    read_only = mint_dev_token(api.rt.settings, [SCOPE_READ])
    assert api.request("GET", "/fhir/EpisodeOfCare", auth=False)[0] == 401
    assert _get(api, "/worklist?unit=8140712", token="not-a-jwt")[0] == 401
    assert _get(api, f"/fhir/AuditEvent?patient={NATIONAL_ID}", token=read_only)[0] == 403
    assert api.request("POST", "/ingest/esp", b"[]", {"Authorization": f"Bearer {read_only}",
                                                        "Content-Type": "application/json"})[0] == 403
    assert _get(api, "/indicators")[0] == 200 and _get(api, "/quality")[0] == 200
    assert _get(api, "/healthz")[0] == 200
    assert len(audit_rows(store)) == before
    with store.read() as conn:
        assert audit.verify(conn).ok and audit.verify(conn).records == len(audit_rows(store))


def test_purpose_of_use_header_and_bad_values(served_api: ServedApi, store: Store):
    status, _, _ = _get(served_api, "/fhir/Task?_count=1", headers={"X-Purpose-Of-Use": "HQUALIMP"})
    assert status == 200 and audit_rows(store)[-1].record.purpose == "HQUALIMP"
    before = len(audit_rows(store))
    status, _, body = _get(served_api, "/fhir/Task?_count=1", headers={"X-Purpose-Of-Use": "<script>"})
    assert status == 400 and "X-Purpose-Of-Use" in outcome(body)["issue"][0]["diagnostics"]
    assert len(audit_rows(store)) == before


def test_audit_event_search_is_valid_fhir_and_filters_by_date(served_api: ServedApi, store: Store):
    api = served_api
    assert _get(api, f"/fhir/EpisodeOfCare?patient.identifier={SID_FNR}|{NATIONAL_ID}")[0] == 200
    for identifier in (NATIONAL_ID, f"{SID_FNR}|{NATIONAL_ID}", f"Patient/{patient_id(NATIONAL_ID)}"):
        status, headers, body = _get(api, f"/fhir/AuditEvent?patient={quote(identifier)}&date=ge2026-01-05")
        assert status == 200 and headers["content-type"].startswith("application/fhir+json")
        bundle = json.loads(body)
        events = [e["resource"] for e in bundle["entry"]]
        assert len(events) >= 2  # the eSP load and the search
        for event in events:
            AuditEvent.model_validate(event)  # valid R4 (the R4B AuditEvent is R4's)
            assert {"reference": f"Patient/{patient_id(NATIONAL_ID)}"} in [e.get("what") for e in event["entity"]]
        search = [e for e in events if e["action"] == "E"][0]
        assert search["outcome"] == "0" and search["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
        assert search["agent"][0]["who"]["identifier"]["value"] == "dev-client"
    # The clock of the served API is 2026-01-05: nothing after that day, nothing before it in a strict window.
    assert json.loads(_get(api, f"/fhir/AuditEvent?patient={NATIONAL_ID}&date=gt2026-01-05")[2])["entry"] == []
    assert json.loads(_get(api, f"/fhir/AuditEvent?patient={NATIONAL_ID}&date=lt2026-01-05")[2])["entry"] == []
    paged = json.loads(_get(api, f"/fhir/AuditEvent?patient={NATIONAL_ID}&_count=1")[2])
    assert len(paged["entry"]) == 1 and [link["relation"] for link in paged["link"]] == ["self", "next"]
    three_dates = f"patient={NATIONAL_ID}&date=ge2026-01-01&date=le2026-01-31&date=eq2026-01-05"
    for bad in ("patient=Patient/%00", "patient=12345678901&date=yesterday", "date=ge2026-01-01", three_dates):
        status, _, body = _get(api, f"/fhir/AuditEvent?{bad}")
        assert status == 400, bad
        outcome(body)


def test_a_record_that_cannot_be_written_fails_the_request_closed(served_api: ServedApi, store: Store,
                                                                  contracts_dir: Path):
    """The audit table made unwritable: reads and writes answer 503, and a write's events are not kept."""
    api = served_api
    with store.transaction() as conn:
        conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    status, headers, body = _get(api, "/fhir/Task?_count=1")
    assert status == 503 and headers["retry-after"] and outcome(body)["issue"][0]["code"] == "transient"
    assert b"Task/" not in body
    with store.read() as conn:
        events_before = conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar()
    esp = [json.loads(line) for line in (contracts_dir / "esp-examples.ndjson").read_text().splitlines()][:1]
    esp[0]["meldingsId"] = "fresh-event-for-the-fail-closed-test"
    status, _, body = api.request("POST", "/ingest/esp", json.dumps(esp).encode(),
                                  {"Content-Type": "application/json"})
    assert status == 503, body
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar() == events_before
    with store.transaction() as conn:
        conn.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert _get(api, "/fhir/Task?_count=1")[0] == 200


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET hash = 'forged'",
    "DELETE FROM audit_log",
    "DELETE FROM audit_patients",
    "UPDATE audit_patients SET patient_id = 'x'",
    "DELETE FROM audit_checkpoints",
])
def test_update_and_delete_of_audit_rows_are_refused(served_api: ServedApi, store: Store, statement: str):
    before = audit_rows(store)
    assert before
    with pytest.raises(Exception, match="append-only") as caught, store.transaction() as conn:
        if "checkpoints" in statement:
            conn.execute(text("INSERT INTO audit_checkpoints (created_at, first_kept_id, anchor_hash, removed) "
                              "VALUES (CURRENT_TIMESTAMP, 0, 'x', 0)"))
        conn.execute(text(statement))
    assert "append-only" in str(caught.value)
    assert audit_rows(store) == before


@pytest.mark.postgres
def test_truncate_is_refused_on_postgresql(postgres_store: Store):
    with pytest.raises(Exception, match="append-only"), postgres_store.transaction() as conn:
        conn.execute(text("TRUNCATE audit_log"))
