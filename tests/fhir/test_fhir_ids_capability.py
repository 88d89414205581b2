"""Deterministic ids and the CapabilityStatement the API serves."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from hypothesis import given, settings
from hypothesis import strategies as st

from forlop.fhir import ids
from forlop.fhir.capability import capability_statement
from profiles.fhir import load_conformance
from services.api.params import CHAINED
from services.pathway.domain.search_index import SEARCH_PARAMS

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def test_ids_are_legal_deterministic_and_distinct() -> None:
    made = [
        ids.episode_id("dips:P-1"),
        ids.task_id("dips:P-1", "evaluation-2"),
        ids.patient_id("17859007759"),
        ids.organization_id("8100001"),
        ids.practitioner_id("9144889"),
        ids.resource_id("Task", "dips:P-1|evaluation-2"),
        ids.resource_id("Task", "dips:P-1", "evaluation-2", "x" * 500),
    ]
    assert all(FHIR_ID.fullmatch(i) for i in made)
    assert len(set(made)) == len(made)
    assert ids.episode_id("dips:P-1") == made[0]
    assert ids.episode_id("esp:P-1") != made[0]
    assert ids.resource_id("Patient", "8100001") != ids.organization_id("8100001")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=4), st.lists(st.text(alphabet=st.sampled_from('aZ0|/:-"\\\n\x01\x1fæø\u2028\x7f {}'),
                                            max_size=8), min_size=1, max_size=3))
def test_resource_id_is_uuid5_of_the_json_of_its_parts(kind: str, parts: list[str]) -> None:
    # the fast path (no JSON encoder for parts with nothing to escape) must keep every id ever minted
    want = str(uuid.uuid5(ids.NAMESPACE, json.dumps([kind, *parts], ensure_ascii=False)))
    assert ids.resource_id(kind, *parts) == want


def test_identifier_systems() -> None:
    assert ids.FHIR_BASE == "https://forlop.no/fhir"
    assert ids.national_id_system("17859007759") == ids.SID_FNR
    assert ids.national_id_system("42830870266") == ids.SID_DNR
    assert ids.pathway_id_system("esp") == "https://forlop.no/fhir/sid/pathway/esp"


def test_capability_statement_validates() -> None:
    cs = capability_statement("https://api.example.no/fhir", "1.2.3")
    CapabilityStatement.model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1" and cs["format"] == ["json"] and cs["kind"] == "instance"
    assert cs["implementation"]["url"] == "https://api.example.no/fhir"
    assert cs["software"]["version"] == "1.2.3"
    assert cs == capability_statement("https://api.example.no/fhir", "1.2.3")


def test_capability_statement_lists_exactly_what_the_api_supports() -> None:
    rest = capability_statement("http://x/fhir", "0")["rest"][0]
    declared = {r["type"]: {p["name"] for p in r["searchParam"]} for r in rest["resource"]}
    # The audit trail: searched by patient and date only (services.api.auditing); one record read by id
    # (a search entry's fullUrl).
    assert declared.pop("AuditEvent") == {"patient", "date", "_count", "_cursor"}
    audit_event = next(r for r in rest["resource"] if r["type"] == "AuditEvent")
    assert [i["code"] for i in audit_event["interaction"]] == ["read", "search-type"]
    # The chain patient.identifier (and its spelling patient:identifier) is documented on `patient`.
    chained = set(CHAINED.values())
    supported = {
        rtype: (set(params) - chained)
        | {"_id", "_count", "_offset", "_cursor", "_total", "_lastUpdated", "_sort", "_summary", "_elements"}
        for rtype, params in SEARCH_PARAMS.items()
    }
    assert declared == supported
    episode = next(r for r in rest["resource"] if r["type"] == "EpisodeOfCare")
    patient_doc = next(p["documentation"] for p in episode["searchParam"] if p["name"] == "patient")
    assert all(name in patient_doc for name in CHAINED)
    for r in rest["resource"]:
        if r["type"] != "AuditEvent":
            assert [i["code"] for i in r["interaction"]] == ["read", "vread", "search-type", "history-instance",
                                                             "history-type"]
            assert r["readHistory"] is True and r["conditionalRead"] == "full-support"


def test_capability_statement_profiles_exist() -> None:
    rest = capability_statement("http://x/fhir", "0")["rest"][0]
    profiles = {r["type"]: r.get("supportedProfile", []) for r in rest["resource"]}
    assert profiles["EpisodeOfCare"] == [ids.PROFILE_EPISODE_OF_CARE]
    assert profiles["Task"] == [ids.PROFILE_TASK]
    conformance = load_conformance()
    for url in [u for urls in profiles.values() for u in urls]:
        assert conformance[url]["type"] in profiles


@pytest.fixture
def client(tmp_path: Path, build: dict[str, Any]) -> Iterator[Any]:
    """The API app on SQLite holding one mapped pathway, with a read token."""
    from datetime import UTC, datetime

    from forlop.auth import SCOPE_AUDIT_READ, SCOPE_READ, TokenVerifier, mint_dev_token
    from forlop.clock import FixedClock
    from forlop.config import load_settings
    from forlop.storage import Store
    from services.api.app import ApiDeps, create_app
    from services.pathway.adapters.fhir_repository import upsert_resources
    from services.pathway.domain.fhir_mapping import map_pathway

    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_DATABASE_URL": "sqlite://"})
    store = Store(f"sqlite:///{tmp_path / 'forlop.db'}")
    store.migrate()
    status, events = build["adjusted-deadline-delay-cause"]()
    now = datetime(2026, 4, 1, tzinfo=UTC)
    with store.transaction() as conn:
        upsert_resources(conn, map_pathway(status, events), status.pathway_key, now)
    app = create_app(ApiDeps(settings, store, FixedClock(now), TokenVerifier(settings)))
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"
    test_client.audit_token = mint_dev_token(settings, [SCOPE_AUDIT_READ])
    yield test_client
    store.dispose()


def test_served_metadata_is_valid_and_every_declared_parameter_is_accepted(client: Any) -> None:
    response = client.get("/fhir/metadata", environ_base={"HTTP_AUTHORIZATION": ""})
    assert response.status_code == 200
    cs = response.get_json()
    CapabilityStatement.model_validate(cs)
    probe = {"_count": "5", "_offset": "0", "_total": "accurate", "_lastUpdated": "ge2026", "_sort": "-_lastUpdated",
             "_summary": "true", "_elements": "meta", "_cursor": "0", "date": "ge2026-01-01"}
    audit_token = {"HTTP_AUTHORIZATION": f"Bearer {client.audit_token}"}
    for resource in cs["rest"][0]["resource"]:
        audit_event = resource["type"] == "AuditEvent"
        for param in resource["searchParam"]:
            value = probe.get(param["name"], "x") if not audit_event else probe.get(param["name"], "17859007759")
            query = {"patient": "17859007759", param["name"]: value} if audit_event else {param["name"]: value}
            found = client.get(f"/fhir/{resource['type']}", query_string=query,
                               environ_base=audit_token if audit_event else {})
            assert found.status_code == 200, (resource["type"], param["name"], found.get_json())
        unknown = client.get(f"/fhir/{resource['type']}", query_string={"not-a-param": "x"},
                             environ_base=audit_token if audit_event else {})
        assert unknown.status_code == 400
    chained = client.get(
        "/fhir/EpisodeOfCare", query_string={"patient:identifier": f"{ids.SID_FNR}|17859007759"}
    )
    assert chained.get_json()["total"] == 1
    overdue = client.get("/fhir/Task", query_string={"business-status": "overdue"}).get_json()
    assert overdue["total"] == 1
    # the interactions it claims: vread, history-instance, history-type, and the conditional read
    task = overdue["entry"][0]["resource"]
    vid = task["meta"]["versionId"]
    assert client.get(f"/fhir/Task/{task['id']}/_history/{vid}").get_json() == task
    assert client.get(f"/fhir/Task/{task['id']}/_history").get_json()["type"] == "history"
    assert client.get("/fhir/Task/_history").get_json()["entry"]
    assert client.get(f"/fhir/Task/{task['id']}", headers={"If-None-Match": f'W/"{vid}"'}).status_code == 304
