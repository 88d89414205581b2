"""`forlop token [--org N]`: development tokens for the demo registry's tenants (embedded mode only)."""

from __future__ import annotations

import json

import jwt

from app import cli
from app.bootstrap import Runtime
from forlop.auth import CLAIM_ORGNR_PARENT, SCOPE_ADMIN, TokenVerifier
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store
from forlop.tenants import DEVELOPMENT_ORG_NUMBER, load_tenants
from forlop_devtools import synthetic
from services.api.app import ApiDeps, create_app

AS_OF = parse_time("2026-01-05T10:00:00+01:00")


def _token(capsys, *args: str) -> str:
    assert cli.main(["token", *args]) == 0
    return capsys.readouterr().out.strip()


def test_plain_token_reads_every_demo_pathway_and_org_token_only_its_own(
        tmp_path, monkeypatch, capsys, root_logging, store: Store, contracts_dir):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    plain = _token(capsys)
    claims = jwt.decode(plain, options={"verify_signature": False})
    assert claims[CLAIM_ORGNR_PARENT] == DEVELOPMENT_ORG_NUMBER and SCOPE_ADMIN in claims["scope"]
    hospital = _token(capsys, "--org", "983974899", "--hpr", "9144900")
    assert jwt.decode(hospital, options={"verify_signature": False})["helseid://claims/hpr/hpr_number"] == "9144900"

    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    rt = Runtime(settings, store, FixedClock(AS_OF))
    client = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings))).test_client()
    body = (contracts_dir / "dips-examples.ndjson").read_bytes()
    as_plain = {"Authorization": f"Bearer {plain}"}
    # the contract examples' unit (8140712) is none of the demo hospital's: only the development tenant posts them
    refused = client.post("/ingest/dips", data=body, headers={"Authorization": f"Bearer {hospital}",
                                                              "Content-Type": "application/x-ndjson"})
    assert refused.status_code == 403 and "8140712" in refused.json["issue"][0]["diagnostics"]
    assert client.post("/ingest/dips", data=body, headers=as_plain | {"Content-Type": "application/x-ndjson"}
                       ).status_code == 202
    rt.drain_outbox(rt.topic_handlers(["pathway"]))
    everything = client.get("/fhir/EpisodeOfCare?_total=accurate", headers=as_plain).json
    assert everything["total"] == len({json.loads(x)["pathway"]["id"] for x in body.splitlines()}) == 3
    first = everything["entry"][0]["resource"]["id"]
    assert client.get(f"/fhir/EpisodeOfCare/{first}", headers=as_plain).status_code == 200
    assert client.get(f"/fhir/EpisodeOfCare/{first}", headers={"Authorization": f"Bearer {hospital}"}
                      ).status_code == 404


def test_an_org_outside_the_registry_gets_no_token(tmp_path, monkeypatch, capsys, root_logging):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    assert cli.main(["token", "--org", "123456789"]) == 2
    err = capsys.readouterr().err
    assert "123456789 is not in the tenant registry" in err and "983974899 (hospital)" in err


def test_no_development_token_in_production(tmp_path, monkeypatch, capsys, root_logging):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORLOP_MODE", "production")
    assert cli.main(["token"]) == 2
    assert "development tokens" in capsys.readouterr().err


def test_the_demo_registry_covers_the_generator():
    """`make run` posts the generator's events and reads them as its tenants: every unit and kommune is in it."""
    tenants = load_tenants(load_settings({})).tenants.values()
    units = {u for t in tenants for u in t.units}
    generated = {her for per_type in synthetic._UNITS.values() for her, _ in per_type}
    generated |= {her for her, _ in synthetic._INPATIENT_UNITS.values()}
    assert generated <= units
    assert set(synthetic._MUNICIPALITIES) <= {t.municipality for t in tenants if t.kind == "municipality"}
    assert {t.kind for t in tenants} == {"development", "hospital", "municipality", "national", "operator"}
