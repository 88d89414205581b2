"""FHIR's standard search controls as the API serves them: _id, _summary, _elements, _total, the token forms,
_include/_revinclude, :missing, Prefer: handling, and a 400 that names anything else."""

from __future__ import annotations

import pytest

from forlop.clock import parse_time
from forlop.fhir import ids
from forlop.storage import Store
from tests.api.conftest import loaded_client
from tests.fhircheck import assert_valid_r4

AS_OF = parse_time("2026-01-05T10:00:00+01:00")
BASE = "http://localhost:8080"


@pytest.fixture
def api(store: Store, tmp_path, contracts_dir):
    return loaded_client(store, tmp_path, contracts_dir)


def _get(api, target: str, status: int = 200, **headers: str) -> dict:
    resp = api.get(target, headers=api.read | headers)
    assert resp.status_code == status, resp.json
    assert_valid_r4(resp.json)
    return resp.json


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _all(api, rtype: str) -> list[dict]:
    return [e["resource"] for e in _get(api, f"/fhir/{rtype}?_count=500")["entry"]]


def test_id(api):
    tasks = _all(api, "Task")
    a, b = tasks[0], tasks[3]
    assert _ids(_get(api, f"/fhir/Task?_id={a['id']}")) == [a["id"]]
    assert _ids(_get(api, f"/fhir/Task?_id={b['id']},{a['id']},nope")) == sorted([a["id"], b["id"]])
    both = _get(api, f"/fhir/Task?_id={a['id']},{b['id']}&status={a['status']}")
    assert _ids(both) == sorted({a["id"], b["id"]} if a["status"] == b["status"] else {a["id"]})
    assert _ids(_get(api, f"/fhir/EpisodeOfCare?_id={a['id']}")) == []  # a Task's id names no EpisodeOfCare
    assert _get(api, "/fhir/Task?_id=not%20an%20id", 400)["issue"][0]["expression"] == ["_id"]


def test_summary_count_and_total(api):
    n = len(_all(api, "Task"))
    counted = _get(api, "/fhir/Task?_summary=count")
    assert counted["total"] == n and counted.get("entry", []) == []
    requested = [t for t in _all(api, "Task") if t["status"] == "requested"]
    assert _get(api, "/fhir/Task?status=requested&_summary=count")["total"] == len(requested)
    assert _get(api, "/fhir/Task?_count=2&_total=accurate")["total"] == n
    assert _get(api, "/fhir/Task?_summary=text", 400)["issue"][0]["expression"] == ["_summary"]


def test_summary_true_and_elements_subset_and_tag(api):
    full = {t["id"]: t for t in _all(api, "Task")}
    summary = _get(api, "/fhir/Task?_summary=true&_count=500")
    for entry in summary["entry"]:
        res = entry["resource"]
        whole = full[res["id"]]
        assert {"code": "SUBSETTED"}.items() <= res["meta"]["tag"][-1].items()
        assert "restriction" not in res and "extension" not in res  # not summary elements
        assert res["status"] == whole["status"] and res["focus"] == whole["focus"]
        assert set(res) < set(whole) | {"meta"}
    elements = _get(api, "/fhir/Task?_elements=code,owner&_count=500")
    for entry in elements["entry"]:
        res = entry["resource"]
        # the named ones, and what every Task must have (a subset is still a valid Task)
        assert set(res) == {"resourceType", "id", "meta", "code", "owner", "status", "intent"}
        assert res["code"] == full[res["id"]]["code"]
    bad = _get(api, "/fhir/Task?_elements=code,colour", 400)
    assert bad["issue"][0]["expression"] == ["_elements"] and "colour" in bad["issue"][0]["diagnostics"]


def test_token_forms(api):
    episodes = _all(api, "EpisodeOfCare")
    assert _ids(_get(api, f"/fhir/EpisodeOfCare?type={ids.SYSTEM_PATHWAY_TYPE}|&_count=500")) == sorted(
        e["id"] for e in episodes)  # any code of the system
    assert _ids(_get(api, "/fhir/EpisodeOfCare?type=http://example.org/other|&_count=500")) == []
    d01 = sorted(e["id"] for e in episodes if e["type"][0]["coding"][0]["code"] == "D01")
    assert _ids(_get(api, f"/fhir/EpisodeOfCare?type={ids.SYSTEM_PATHWAY_TYPE}|D01")) == d01
    assert d01 and _ids(_get(api, "/fhir/EpisodeOfCare?type=D01")) == d01
    assert _ids(_get(api, "/fhir/EpisodeOfCare?type=|D01")) == []  # every pathway type has its system
    patients = _all(api, "Patient")
    system = patients[0]["identifier"][0]["system"]
    with_system = sorted(p["id"] for p in patients if p["identifier"][0]["system"] == system)
    assert _ids(_get(api, f"/fhir/Patient?identifier={system}|&_count=500")) == with_system
    orgs = _get(api, f"/fhir/Organization?identifier={ids.SID_HER_ID}|,{ids.SID_ORG_NUMBER}|&_count=500")
    assert sorted(_ids(orgs)) == sorted(o["id"] for o in _all(api, "Organization"))


def test_include_and_revinclude(api):
    tasks = _get(api, "/fhir/Task?status=requested&_include=Task:focus&_include=Task:patient,Task:owner&_count=500")
    matched = [e["resource"] for e in tasks["entry"] if e["search"]["mode"] == "match"]
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in tasks["entry"]
                if e["search"]["mode"] == "include"}
    wanted = {tuple(t[f]["reference"].split("/")) for t in matched for f in ("focus", "for", "owner")}
    assert matched and included == wanted
    assert all(e["fullUrl"] == f"{BASE}/fhir/{e['resource']['resourceType']}/{e['resource']['id']}"
               for e in tasks["entry"])
    assert len(tasks["entry"]) == len({(e["resource"]["resourceType"], e["resource"]["id"]) for e in tasks["entry"]})

    only_episodes = _get(api, "/fhir/Task?_include=Task:focus:EpisodeOfCare&_count=3")
    assert {e["resource"]["resourceType"] for e in only_episodes["entry"] if e["search"]["mode"] == "include"} == {
        "EpisodeOfCare"}
    episodes = _get(api, "/fhir/EpisodeOfCare?_include=EpisodeOfCare:patient&_include=EpisodeOfCare:organization"
                         "&_revinclude=Task:focus&_count=500")
    ep_ids = set(_ids(episodes))
    rev = [e["resource"] for e in episodes["entry"] if e["resource"]["resourceType"] == "Task"]
    assert all(e["search"]["mode"] == "include" for e in episodes["entry"] if e["resource"]["resourceType"] == "Task")
    assert sorted(t["id"] for t in rev) == sorted(t["id"] for t in _all(api, "Task")
                                                 if t["focus"]["reference"].split("/")[1] in ep_ids)
    kinds = {e["resource"]["resourceType"] for e in episodes["entry"] if e["search"]["mode"] == "include"}
    assert kinds == {"Patient", "Organization", "Task"}
    # only the page's matches' references: the total counts matches alone
    page = _get(api, "/fhir/Task?_include=Task:focus&_count=2&_total=accurate")
    assert len(_ids(page)) == 2 and page["total"] == len(_all(api, "Task"))

    for target, name in (("/fhir/Task?_include=*", "_include"), ("/fhir/Task?_include=Task:focus:iterate", "_include"),
                         ("/fhir/Task?_include:iterate=Task:focus", "_include:iterate"),
                         ("/fhir/EpisodeOfCare?_include=Task:focus", "_include"),
                         ("/fhir/Task?_include=Task:code", "_include"),
                         ("/fhir/Task?_revinclude=EpisodeOfCare:patient", "_revinclude"),
                         ("/fhir/Task?_include=", "_include"), ("/fhir/Patient?_revinclude=&_revinclude=", "_revinclude"),
                         ("/fhir/EpisodeOfCare?_revinclude=Task:focus,", "_revinclude")):
        bad = _get(api, target, 400)
        assert bad["issue"][0]["expression"] == [name], target


def test_missing_on_reference_parameters(api):
    tasks = _all(api, "Task")
    assert _ids(_get(api, "/fhir/Task?focus:missing=true")) == []  # every Task has its pathway
    assert sorted(_ids(_get(api, "/fhir/Task?owner:missing=false&_count=500"))) == sorted(t["id"] for t in tasks)
    orgs = _all(api, "Organization")
    trusts = sorted(o["id"] for o in orgs if "partOf" not in o)
    units = sorted(o["id"] for o in orgs if "partOf" in o)
    assert trusts and units
    assert _ids(_get(api, "/fhir/Organization?partof:missing=true&_count=500")) == trusts
    assert _ids(_get(api, "/fhir/Organization?partof:missing=false&_count=500")) == units
    assert _get(api, "/fhir/Task?focus:missing=maybe", 400)["issue"][0]["expression"] == ["focus:missing"]
    assert _get(api, "/fhir/Task?status:missing=true", 400)["issue"][0]["expression"] == ["status:missing"]
    assert _get(api, "/fhir/Task?status:not=requested", 400)["issue"][0]["expression"] == ["status:not"]


def test_partof_finds_the_units_of_a_trust(api):
    orgs = _all(api, "Organization")
    trust = next(o for o in orgs if "partOf" not in o and o["identifier"][0]["system"] == ids.SID_ORG_NUMBER)
    units = sorted(o["id"] for o in orgs if o.get("partOf", {}).get("reference") == f"Organization/{trust['id']}")
    assert units
    assert _ids(_get(api, f"/fhir/Organization?partof=Organization/{trust['id']}")) == units
    assert _ids(_get(api, f"/fhir/Organization?partof={trust['id']}")) == units


def test_prefer_handling(api):
    strict = _get(api, "/fhir/Task?colour=blue&status=requested", 400)
    assert strict["issue"][0]["expression"] == ["colour"]
    assert _get(api, "/fhir/Task?colour=blue", 400, Prefer="handling=strict")["issue"][0]["expression"] == ["colour"]
    lenient = _get(api, "/fhir/Task?colour=blue&status=requested&_totalMethod=count&_count=500", 200,
                   Prefer="return=representation, handling=lenient")
    assert sorted(_ids(lenient)) == sorted(t["id"] for t in _all(api, "Task") if t["status"] == "requested")
    (outcome,) = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert {i["expression"][0] for i in outcome["resource"]["issue"]} == {"colour", "_totalMethod"}
    # a known parameter with a bad value is refused either way: lenient forgives names, not values
    assert _get(api, "/fhir/Task?_count=many", 400, Prefer="handling=lenient")["issue"][0]["expression"] == ["_count"]
    # fhirpy's .count(): _count=0&_totalMethod=count
    assert _get(api, "/fhir/Task?_count=0&_totalMethod=count", 200, Prefer="handling=lenient")["total"] == len(
        _all(api, "Task"))
