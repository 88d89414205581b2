"""Real FHIR client libraries against the running API (waitress on a free port), on both stores.

fhirpy (sync client) and fhirclient (the SMART on FHIR client, strict R4 4.0.1 models) do what an
EHR vendor's or a municipality's integration does: read the CapabilityStatement, read every type,
search with every parameter the CapabilityStatement advertises, follow the next links to the end,
and every resource and Bundle they get is valid by the official R4 schema too.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from fhirclient import client as smart_client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirpy import SyncFHIRClient

from forlop_devtools.fuzz_api import ServedApi
from tests.fhircheck import assert_valid_r4

TYPES = ("EpisodeOfCare", "Task", "Patient", "Organization", "Practitioner")


@pytest.fixture
def served(served_api: ServedApi) -> ServedApi:
    """The API as `forlop serve api` serves it, the contracts' examples loaded (tests/api/conftest.py)."""
    return served_api


def _fhirpy(api: ServedApi, token: str | None = None, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(f"{api.url}/fhir", authorization=f"Bearer {token or api.read_token}", extra_headers=headers)


def _smart(api: ServedApi, token: str | None = None) -> smart_client.FHIRClient:
    smart = smart_client.FHIRClient(settings={"app_id": "forlop-tests", "api_base": f"{api.url}/fhir/"})
    smart.server.session.headers["Authorization"] = f"Bearer {token or api.read_token}"
    return smart


def _model(rtype: str) -> Any:
    """fhirclient's strict R4 model class of a resource type."""
    return getattr(importlib.import_module(f"fhirclient.models.{rtype.lower()}"), rtype)


def _raw(api: ServedApi, target: str) -> dict[str, Any]:
    status, _, body = api.request("GET", target, headers={"Authorization": f"Bearer {api.read_token}"})
    assert status == 200, body[:500]
    parsed = json.loads(body)
    assert_valid_r4(parsed)
    return parsed


def _everything(api: ServedApi, rtype: str) -> dict[str, dict[str, Any]]:
    """Every resource of a type, by id, from one large page (the reference the clients are held to)."""
    bundle = _raw(api, f"/fhir/{rtype}?_count=500")
    assert "next" not in {link["relation"] for link in bundle["link"]}
    return {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}


def test_fhirclient_reads_the_capability_statement_and_every_resource(served: ServedApi):
    smart = _smart(served)
    smart.prepare()  # fetches /metadata and parses it with the strict R4 models
    cs = smart.server.capabilityStatement
    assert isinstance(cs, CapabilityStatement) and cs.fhirVersion == "4.0.1"
    assert cs.implementation.url == f"{served.url}/fhir"
    assert sorted(r.type for r in cs.rest[0].resource) == sorted((*TYPES, "AuditEvent"))
    for rtype in TYPES:
        stored = _everything(served, rtype)
        assert stored, rtype
        model = _model(rtype)
        for rid, resource in stored.items():
            read = model.read(rid, smart.server)  # strict: raises on anything not R4
            assert read.as_json() == resource
            assert_valid_r4(_raw(served, f"/fhir/{rtype}/{rid}"))


def test_fhirclient_follows_every_page(served: ServedApi):
    smart = _smart(served)
    for rtype in TYPES:
        model = _model(rtype)
        seen = [r.id for r in model.where(struct={"_count": "2"}).perform_resources_iter(smart.server)]
        assert len(seen) == len(set(seen)) and set(seen) == set(_everything(served, rtype)), rtype


def test_fhirpy_reads_and_pages_to_the_end(served: ServedApi):
    fhirpy = _fhirpy(served)
    for rtype in TYPES:
        stored = _everything(served, rtype)
        for size in (1, 3):
            seen = [r["id"] for r in fhirpy.resources(rtype).limit(size).fetch_all()]
            assert len(seen) == len(set(seen)), f"{rtype}: a resource twice across pages"
            assert set(seen) == set(stored), f"{rtype}: resources missed across pages"
        some = next(iter(stored))
        assert fhirpy.reference(rtype, some).to_resource().serialize() == stored[some]


# How a client finds a value for each advertised search parameter in a resource it has, and whether
# the resource must then be among the matches. Parameters not here fail the test below: whatever the
# CapabilityStatement advertises is searched with.
def _token(coding: dict[str, Any]) -> list[str]:
    value = coding.get("value", coding.get("code"))
    return [f"{coding['system']}|{value}", str(value)] if "system" in coding else [str(value)]


def _first_coding(concept: dict[str, Any] | None) -> dict[str, Any] | None:
    return (concept or {}).get("coding", [None])[0]


VALUES = {
    ("EpisodeOfCare", "identifier"): lambda r: _token(r["identifier"][0]),
    ("EpisodeOfCare", "patient"): lambda r: [r["patient"]["reference"], r["patient"]["reference"].split("/")[1]],
    ("EpisodeOfCare", "status"): lambda r: [r["status"]],
    ("EpisodeOfCare", "type"): lambda r: _token(r["type"][0]["coding"][0]),
    ("EpisodeOfCare", "organization"): lambda r: [r["managingOrganization"]["reference"]],
    ("Task", "focus"): lambda r: [r["focus"]["reference"]],
    ("Task", "patient"): lambda r: [r["for"]["reference"]],
    ("Task", "status"): lambda r: [r["status"]],
    ("Task", "code"): lambda r: _token(r["code"]["coding"][0]),
    ("Task", "business-status"): lambda r: _token(c) if (c := _first_coding(r.get("businessStatus"))) else [],
    ("Task", "owner"): lambda r: [r["owner"]["reference"]],
    ("Patient", "identifier"): lambda r: _token(r["identifier"][0]),
    ("Organization", "identifier"): lambda r: _token(r["identifier"][0]),
    ("Organization", "partof"): lambda r: [r["partOf"]["reference"]] if "partOf" in r else [],
    ("Practitioner", "identifier"): lambda r: _token(r["identifier"][0]),
    **{(t, "_id"): (lambda r: [r["id"]]) for t in TYPES},
    **{(t, "_lastUpdated"): (lambda r: [f"ge{r['meta']['lastUpdated']}"]) for t in TYPES},
}
# Chained on the patient's identifier: the value comes from the Patient the resource refers to.
CHAINED = {("EpisodeOfCare", "patient.identifier"), ("EpisodeOfCare", "patient:identifier")}
# paging and totals (test_fhirpy_reads_and_pages), subsets (tests/api/test_search_controls.py)
RESULT_CONTROLS = {"_count", "_offset", "_cursor", "_total", "_summary", "_elements", "_sort"}


def test_fhirpy_searches_with_every_advertised_parameter(served: ServedApi):
    fhirpy = _fhirpy(served)
    metadata = _raw(served, "/fhir/metadata")
    patients = _everything(served, "Patient")
    for resource in metadata["rest"][0]["resource"]:
        rtype = resource["type"]
        if rtype == "AuditEvent":  # its own scope, searched per patient: test_the_audit_trail_through_both_clients
            continue
        stored = _everything(served, rtype)
        for param in resource["searchParam"]:
            name = param["name"]
            if name in RESULT_CONTROLS:
                continue
            assert (rtype, name) in VALUES or (rtype, name) in CHAINED, f"{rtype}?{name} is advertised, never tested"
            tried = 0
            for rid, res in stored.items():  # the first resource with a value: one search per form of value
                if (rtype, name) in CHAINED:
                    values = _token(patients[res["patient"]["reference"].split("/")[1]]["identifier"][0])
                else:
                    values = VALUES[(rtype, name)](res)
                for value in values:
                    found = {r["id"] for r in fhirpy.resources(rtype).search(**{name: value}).limit(500).fetch_all()}
                    assert rid in found, f"{rtype}?{name}={value} misses {rid}"
                    tried += 1
                if tried:
                    break
            assert tried, f"{rtype}?{name}: no served resource has a value to search with"


def test_fhirpy_include_revinclude_and_count(served: ServedApi):
    fhirpy = _fhirpy(served)
    tasks = _everything(served, "Task")
    bundle = (fhirpy.resources("Task").search(status="requested").include("Task", "focus")
              .include("Task", "patient").include("Task", "owner").limit(500).fetch_raw())
    assert_valid_r4(json.loads(json.dumps(bundle)))
    matches = [e.resource for e in bundle.entry if e.search.mode == "match"]
    included = {(e.resource.resourceType, e.resource.id) for e in bundle.entry if e.search.mode == "include"}
    assert {r.id for r in matches} == {i for i, t in tasks.items() if t["status"] == "requested"}
    assert included == {tuple(r[f].reference.split("/")) for r in matches for f in ("focus", "for", "owner")}

    episodes = fhirpy.resources("EpisodeOfCare").revinclude("Task", "focus").limit(500).fetch_raw()
    rev = {e.resource.id for e in episodes.entry if e.resource.resourceType == "Task"}
    assert rev == set(tasks)  # every Task is some served EpisodeOfCare's

    # .count() sends _count=0&_totalMethod=count: with lenient handling the unknown parameter is left out
    lenient = _fhirpy(served, Prefer="handling=lenient")
    assert lenient.resources("Task").count() == len(tasks)
    assert lenient.resources("Task").search(status="requested").count() == len(
        [t for t in tasks.values() if t["status"] == "requested"])


def test_fhirclient_include(served: ServedApi):
    smart = _smart(served)
    task, episode = _model("Task"), _model("EpisodeOfCare")
    bundle = task.where(struct={"_count": "500"}).include("focus").perform(smart.server)
    kinds = {(e.search.mode, e.resource.resource_type) for e in bundle.entry}
    assert kinds == {("match", "Task"), ("include", "EpisodeOfCare")}
    rev = episode.where(struct={"_count": "500"}).include("focus", task, reverse=True).perform(smart.server)
    assert {e.resource.id for e in rev.entry if e.resource.resource_type == "Task"} == set(_everything(served, "Task"))


# #24 item 2: type-level history paged by its next links, a deletion as an entry with request.method
# DELETE, a deleted resource's read 410.
def test_fhirpy_syncs_by_history_since_across_an_update_and_a_withdrawal(served: ServedApi, contracts_dir: Path):
    fhirpy = _fhirpy(served)
    before = _everything(served, "Task")
    poll = served.rt.clock()
    served.rt.clock.advance(minutes=5)
    # a withdrawal (DIPS: ppr.document.deleted) of the last document of a pathway
    dips = [json.loads(line) for line in (contracts_dir / "dips-examples.ndjson").read_text().splitlines()]
    target = [e for e in dips if e["pathway"]["id"] == "PPR-1810111"][-1]
    deletion = dict(target, eventId="0c6f7b1e-0000-4000-8000-00000000dead", eventType="ppr.document.deleted",
                    recordedTime="2026-01-04T09:00:00+01:00",
                    document={"id": target["document"]["id"], "reason": "feilregistrering"})
    status, _, body = served.request("POST", "/ingest/dips", json.dumps(deletion).encode(),
                                     {"Content-Type": "application/json"})
    assert status == 202, body
    served.rt.drain_outbox(served.rt.topic_handlers(["pathway"]))
    after = _everything(served, "Task")
    gone = set(before) - set(after)
    changed = {i for i in set(before) & set(after) if after[i]["meta"]["versionId"] != before[i]["meta"]["versionId"]}
    assert gone and changed  # the withdrawal took a Task away and changed others

    since = (poll + (served.rt.clock() - poll) / 2).isoformat()
    entries, bundle = [], fhirpy.execute("Task/_history", method="get", params={"_since": since, "_count": 2})
    while True:
        assert bundle["type"] == "history"
        assert_valid_r4(json.loads(json.dumps(bundle)))
        entries += bundle.get("entry", [])
        next_link = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
        if not next_link:
            break
        bundle = fhirpy.execute(next_link, method="get")
    deleted = {e["request"]["url"].split("/")[1] for e in entries if e["request"]["method"] == "DELETE"}
    updated = {e["resource"]["id"] for e in entries if e["request"]["method"] in ("PUT", "POST")}
    assert deleted == gone and changed <= updated and not updated & gone
    assert len(entries) == len({(e["request"]["method"], e["request"]["url"]) for e in entries})  # none twice
    for rid in gone:
        status, _, _ = served.request("GET", f"/fhir/Task/{rid}", headers={"Authorization": f"Bearer {served.read_token}"})
        assert status == 410


def test_the_audit_trail_through_both_clients(served: ServedApi):
    """A patient's question "who has looked at my data", as a client library asks it (scope forlop/audit.read)."""
    patient = next(iter(_everything(served, "Patient").values()))
    national_id = _token(patient["identifier"][0])[0]
    _fhirpy(served).reference("Patient", patient["id"]).to_resource()  # one access the trail must show
    fhirpy = _fhirpy(served, served.token)
    events = fhirpy.resources("AuditEvent").search(patient=national_id).limit(2).fetch_all()  # pages of 2
    assert events and all(
        any(e["what"]["reference"] == f"Patient/{patient['id']}" for e in event["entity"]) for event in events)
    first = events[0]["recorded"]
    since = fhirpy.resources("AuditEvent").search(patient=f"Patient/{patient['id']}", date=f"ge{first}").fetch_all()
    assert {e["id"] for e in since} >= {e["id"] for e in events if e["recorded"] >= first}
    strict = _model("AuditEvent").where(struct={"patient": national_id}).perform_resources(_smart(served, served.token).server)
    assert strict and all(e.resource_type == "AuditEvent" for e in strict)
    with pytest.raises(Exception, match="forbidden"):  # the read scope alone does not show the trail (403)
        _fhirpy(served).resources("AuditEvent").search(patient=national_id).fetch()
