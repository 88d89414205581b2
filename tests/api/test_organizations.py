"""Organizations as the API serves them: the trust by its organisation number, each unit part of it, the same
content whichever vendor's events came last."""

from __future__ import annotations

import json
from io import StringIO

from app.bootstrap import Runtime
from app.export import export_bundle
from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, TokenVerifier, mint_dev_token
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.fhir import ids
from forlop.storage import Store
from services.api.app import ApiDeps, create_app
from tests.fhircheck import assert_valid_r4

AS_OF = parse_time("2026-01-05T10:00:00+01:00")
TRUST = "983974899"  # DIPS sends it as source.organisation.orgNumber; eSP sends none
UNIT = "8140712"  # both vendors' examples are at this unit


def _api(store: Store, tmp_path):
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_SENDER_ORG_NUMBER": TRUST,
                              "FORLOP_SENDER_ORG_NAME": "Helse Test HF"})
    rt = Runtime(settings, store, FixedClock(AS_OF))
    client = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings))).test_client()
    client.rt = rt
    client.write = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_WRITE_EVENTS])}"}
    client.read = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"}
    return client


def _load(api, contracts_dir, vendor: str) -> None:
    body = (contracts_dir / f"{vendor}-examples.ndjson").read_bytes()
    resp = api.post(f"/ingest/{vendor}", data=body, headers=api.write | {"Content-Type": "application/x-ndjson"})
    assert resp.status_code == 202
    api.rt.drain_outbox(api.rt.topic_handlers(["pathway"]))


def _organizations(api) -> dict[str, dict]:
    bundle = api.get("/fhir/Organization?_count=500", headers=api.read).json
    found = {}
    for entry in bundle["entry"]:
        res = dict(entry["resource"])
        res.pop("meta")
        found[res["id"]] = res
    return found


def test_the_trust_and_its_unit_whichever_vendor_came_last(store: Store, another_store: Store, tmp_path, contracts_dir):
    dips_last, esp_last = _api(store, tmp_path / "a"), _api(another_store, tmp_path / "b")
    _load(dips_last, contracts_dir, "esp")
    _load(dips_last, contracts_dir, "dips")
    _load(esp_last, contracts_dir, "dips")
    before = _organizations(esp_last)
    _load(esp_last, contracts_dir, "esp")
    orgs = _organizations(esp_last)
    assert orgs == _organizations(dips_last) == before  # the eSP events, without a trust, took nothing away

    unit, trust = orgs[ids.organization_id(UNIT)], orgs[ids.trust_id(TRUST)]
    assert unit["identifier"] == [{"system": ids.SID_HER_ID, "value": UNIT}]
    assert unit["partOf"] == {"reference": f"Organization/{trust['id']}"}
    assert trust["identifier"] == [{"system": ids.SID_ORG_NUMBER, "value": TRUST}]
    assert trust["name"] == "Helse Test HF"
    # no unit repeats the trust's organisation number: it belongs to the parent
    assert [o["id"] for o in orgs.values() if any(i["value"] == TRUST for i in o["identifier"])] == [trust["id"]]

    by_number = esp_last.get(f"/fhir/Organization?identifier={ids.SID_ORG_NUMBER}|{TRUST}", headers=esp_last.read)
    assert [e["resource"]["id"] for e in by_number.json["entry"]] == [trust["id"]]
    assert_valid_r4(by_number.json)
    read = esp_last.get(f"/fhir/Organization/{unit['id']}", headers=esp_last.read)
    assert read.json["meta"]["versionId"] == "1"  # written once: later events at the unit changed nothing
    # every EpisodeOfCare and Task of either vendor points at the one unit
    for rtype, field in (("EpisodeOfCare", "managingOrganization"), ("Task", "owner")):
        entries = esp_last.get(f"/fhir/{rtype}?_count=500", headers=esp_last.read).json["entry"]
        assert {e["resource"][field]["reference"] for e in entries} == {f"Organization/{unit['id']}"}


def test_the_export_has_the_same_organizations(store: Store, tmp_path, contracts_dir):




    api = _api(store, tmp_path)
    for vendor in ("esp", "dips"):
        _load(api, contracts_dir, vendor)
    out = StringIO()
    export_bundle(api.rt, AS_OF, out)
    exported = {e["resource"]["id"]: e["resource"] for e in json.loads(out.getvalue())["entry"]
                if e["resource"]["resourceType"] == "Organization"}
    assert exported == _organizations(api)
