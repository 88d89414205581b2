"""The CapabilityStatement claims exactly what works: a request for every claim, against the running API.

Every interaction, search parameter, _include and _revinclude value and format the served
CapabilityStatement names is turned into a request that must succeed (and, for a search criterion,
find the resource its value came from); a claim this test cannot turn into a request fails it, so
nothing is claimed untested. What is not claimed (another type's parameter, a modifier, an
interaction, a format, an include) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from forlop_devtools.fuzz_api import ServedApi
from tests.fhircheck import assert_valid_r4


@pytest.fixture
def served(served_api: ServedApi) -> ServedApi:
    """The API as `forlop serve api` serves it, the contracts' examples loaded (tests/api/conftest.py)."""
    return served_api


def _get(api: ServedApi, target: str, **headers: str) -> tuple[int, dict[str, Any]]:
    # The audit trail needs its own scope (forlop/audit.read); everything else is tried with the read scope.
    token = api.token if target.startswith("/fhir/AuditEvent") else api.read_token
    status, _, body = api.request("GET", target, headers={"Authorization": f"Bearer {token}", **headers})
    parsed = json.loads(body) if body else {}
    if parsed:
        assert_valid_r4(parsed)
    return status, parsed


def _token(item: dict[str, Any]) -> str:
    value = item.get("value", item.get("code"))
    return f"{item['system']}|{value}" if "system" in item else str(value)


def _ref(element: str) -> Callable[[dict[str, Any]], str | None]:
    return lambda r: (r.get(element) or {}).get("reference")


# A value of each claimed search criterion, from a resource that must then match it.
CRITERIA: dict[tuple[str, str], Callable[[dict[str, Any]], str | None]] = {
    ("EpisodeOfCare", "identifier"): lambda r: _token(r["identifier"][0]),
    ("EpisodeOfCare", "patient"): _ref("patient"),
    ("EpisodeOfCare", "status"): lambda r: r["status"],
    ("EpisodeOfCare", "type"): lambda r: _token(r["type"][0]["coding"][0]),
    ("EpisodeOfCare", "organization"): _ref("managingOrganization"),
    ("Task", "focus"): _ref("focus"),
    ("Task", "patient"): _ref("for"),
    ("Task", "status"): lambda r: r["status"],
    ("Task", "code"): lambda r: _token(r["code"]["coding"][0]),
    ("Task", "business-status"): lambda r: _token(r["businessStatus"]["coding"][0]) if "businessStatus" in r else None,
    ("Task", "owner"): _ref("owner"),
    ("Patient", "identifier"): lambda r: _token(r["identifier"][0]),
    ("Organization", "identifier"): lambda r: _token(r["identifier"][0]),
    ("Organization", "partof"): _ref("partOf"),
    ("Practitioner", "identifier"): lambda r: _token(r["identifier"][0]),
    ("AuditEvent", "patient"): lambda r: next(e["what"]["reference"] for e in r["entity"]
                                              if e["what"]["reference"].startswith("Patient/")),
    ("AuditEvent", "date"): lambda r: f"ge{r['recorded']}",
}
COMMON_CRITERIA: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "_id": lambda r: r["id"],
    "_lastUpdated": lambda r: f"ge{r['meta']['lastUpdated']}",
}
# Result and paging parameters: a value each, and what the answer must show of it.
CONTROLS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "_count": ("1", lambda b: len([e for e in b.get("entry", []) if e["search"]["mode"] == "match"]) <= 1),
    "_offset": ("1", lambda b: any(link["relation"] == "previous" for link in b["link"])),
    "_cursor": ("0", lambda b: b["type"] == "searchset"),
    "_total": ("accurate", lambda b: "total" in b),
    "_summary": ("count", lambda b: "total" in b and not b.get("entry")),
    "_elements": ("id", lambda b: all(e["resource"]["meta"]["tag"][-1]["code"] == "SUBSETTED" for e in b["entry"])),
    "_sort": ("-_lastUpdated", lambda b: b["type"] == "searchset"),
}


def _required(api: ServedApi, rtype: str) -> str:
    """The query a search of rtype must carry: AuditEvent is searched per patient, after one read of them."""
    if rtype != "AuditEvent":
        return ""
    _, patients = _get(api, "/fhir/Patient?_count=1")
    some = patients["entry"][0]["resource"]
    assert _get(api, f"/fhir/Patient/{some['id']}")[0] == 200  # an access the trail must show
    return f"patient=Patient/{some['id']}&"


def _stored(api: ServedApi, rtype: str) -> list[dict[str, Any]]:
    status, bundle = _get(api, f"/fhir/{rtype}?{_required(api, rtype)}_count=500")
    assert status == 200
    return [e["resource"] for e in bundle["entry"]]


def test_every_claim_works_against_the_running_api(served: ServedApi):
    status, cs = _get(served, "/fhir/metadata")
    assert status == 200 and cs["fhirVersion"] == "4.0.1"
    for fmt in cs["format"]:
        assert _get(served, f"/fhir/metadata?_format={quote(fmt)}")[0] == 200
    rest = cs["rest"][0]
    assert "interaction" not in rest or not rest["interaction"]  # no system-level interaction is claimed
    for resource in rest["resource"]:
        rtype = resource["type"]
        required = _required(served, rtype)
        stored = _stored(served, rtype)
        assert stored, f"no {rtype} to try the claims on"
        some = stored[0]
        for interaction in (i["code"] for i in resource["interaction"]):
            target = {
                "read": f"/fhir/{rtype}/{some['id']}",
                "search-type": f"/fhir/{rtype}?{required}",
                "vread": f"/fhir/{rtype}/{some['id']}/_history/{some.get('meta', {}).get('versionId')}",
                "history-instance": f"/fhir/{rtype}/{some['id']}/_history",
                "history-type": f"/fhir/{rtype}/_history",
            }.get(interaction)
            assert target, f"{rtype} claims interaction {interaction}, which this test cannot try"
            assert _get(served, target)[0] == 200, (rtype, interaction)
        for param in resource["searchParam"]:
            name = param["name"]
            if name in CONTROLS:
                value, shows = CONTROLS[name]
                status, bundle = _get(served, f"/fhir/{rtype}?{required}{name}={quote(value)}")
                assert status == 200 and shows(bundle), (rtype, name, bundle)
                continue
            find = CRITERIA.get((rtype, name)) or COMMON_CRITERIA.get(name)
            assert find is not None, f"{rtype} claims search parameter {name}, which this test cannot try"
            with_value = [(r, v) for r in stored if (v := find(r))]
            assert with_value, f"{rtype}?{name}: no stored {rtype} has a value"
            res, value = with_value[0]
            required_here = "" if required.startswith(f"{name}=") else required
            status, bundle = _get(served, f"/fhir/{rtype}?{required_here}{name}={quote(value)}&_count=500")
            assert status == 200, (rtype, name, bundle)
            assert res["id"] in {e["resource"]["id"] for e in bundle["entry"]}, (rtype, name, value)
        for name, values in (("_include", resource.get("searchInclude", [])),
                             ("_revinclude", resource.get("searchRevInclude", []))):
            for value in values:
                status, bundle = _get(served, f"/fhir/{rtype}?{name}={value}&_count=500")
                assert status == 200, (rtype, name, value, bundle)
                if name == "_include":  # every match refers to something: the page must include it
                    assert any(e["search"]["mode"] == "include" for e in bundle["entry"]), (rtype, value)


def test_what_is_not_claimed_is_refused(served: ServedApi):
    _, cs = _get(served, "/fhir/metadata")
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    every_param = {p["name"] for r in resources.values() for p in r["searchParam"]}
    every_include = {v for r in resources.values() for v in r.get("searchInclude", [])}
    for rtype, resource in resources.items():
        own = {p["name"] for p in resource["searchParam"]}
        for name in sorted(every_param - own - {"patient.identifier"}):
            status, outcome = _get(served, f"/fhir/{rtype}?{_required(served, rtype)}{name}=x")
            assert status == 400 and outcome["issue"][0]["expression"] == [name], (rtype, name)
        for value in sorted(every_include - set(resource.get("searchInclude", []))):
            assert _get(served, f"/fhir/{rtype}?{_required(served, rtype)}_include={value}")[0] == 400, (rtype, value)
        claimed = {i["code"] for i in resource["interaction"]}
        some = _stored(served, rtype)[0]["id"]
        for method, target, code in (("POST", f"/fhir/{rtype}", "create"), ("PUT", f"/fhir/{rtype}/{some}", "update"),
                                     ("DELETE", f"/fhir/{rtype}/{some}", "delete"),
                                     ("PATCH", f"/fhir/{rtype}/{some}", "patch")):
            assert code not in claimed
            status, _, _ = served.request(method, target, b"{}", {"Authorization": f"Bearer {served.read_token}",
                                                                 "Content-Type": "application/fhir+json"})
            assert status == 405, (method, target)
        if "history-type" not in claimed:
            assert _get(served, f"/fhir/{rtype}/_history")[0] in (400, 404)
    assert "xml" not in cs["format"]
    assert _get(served, "/fhir/metadata?_format=xml")[0] == 406
    assert _get(served, "/fhir/Task", Accept="application/fhir+xml")[0] == 406
    assert _get(served, "/fhir/Observation")[0] == 404  # a type not claimed has no route
