"""Access follows the care relationship: tenant x route x answer, on both stores.

Tokens are HelseID-shaped client-credential tokens signed by a test key the API trusts through
FORLOP_JWT_JWKS_FILE; the tenant registry is a file (FORLOP_TENANTS). Two hospitals, two
municipalities, national statistics and an operator; the contract examples are split between the
hospitals (one pathway moved to the second hospital's unit and to kommune 0301).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from app.bootstrap import Runtime
from forlop.auth import (
    CLAIM_HPR_NUMBER,
    CLAIM_ORGNR_CHILD,
    CLAIM_ORGNR_PARENT,
    SCOPE_ADMIN,
    SCOPE_READ,
    SCOPE_WRITE_EVENTS,
    TokenVerifier,
    mint_dev_token,
)
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store, schema
from forlop.tenants import load_tenants
from services.api.app import ApiDeps, create_app
from services.messaging.public import messages_bp
from services.pathway.public import pathway_bp

AS_OF = parse_time("2026-01-05T10:00:00+01:00")
ISSUER, AUDIENCE, KID = "https://helseid.test", "forlop", "test-key"
HOSPITAL_A, HOSPITAL_B = "910000001", "910000002"
KOMMUNE_5001, KOMMUNE_0301 = "910000005", "910000003"
NATIONAL, OPERATOR, UNKNOWN = "910000004", "910000006", "910000099"
UNIT_A, UNIT_B = "8140712", "8140799"
REGISTRY = {"tenants": [
    {"orgNumber": HOSPITAL_A, "kind": "hospital", "units": [UNIT_A]},
    {"orgNumber": HOSPITAL_B, "kind": "hospital", "units": [UNIT_B]},
    {"orgNumber": KOMMUNE_5001, "kind": "municipality", "municipality": "5001"},
    {"orgNumber": KOMMUNE_0301, "kind": "municipality", "municipality": "0301"},
    {"orgNumber": NATIONAL, "kind": "national"},
    {"orgNumber": OPERATOR, "kind": "operator"},
]}
ALL = [SCOPE_WRITE_EVENTS, SCOPE_READ, SCOPE_ADMIN]
MOVED = "PPR-6175466"  # to hospital B's unit and kommune 0301 (consent in force)
NO_CONSENT = "PPR-4745328"  # hospital A, kommune 5001, no consent to municipal involvement
WITH_CONSENT = "PPR-1810111"  # hospital A, kommune 5001, consent in force


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def mint(key: rsa.RSAPrivateKey, org: str | None, scopes: list[str] = ALL, **claims: str) -> dict[str, str]:
    """An Authorization header with a HelseID-shaped client-credential token for `org`."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "nbf": now, "iat": now, "jti": str(uuid.uuid4()),
            "client_id": f"client-{org}", "sub": f"client-{org}", "scope": " ".join(scopes), **claims}
    if org:
        body[CLAIM_ORGNR_PARENT] = org
    return {"Authorization": f"Bearer {jwt.encode(body, key, algorithm='RS256', headers={'kid': KID})}"}


def trusted_settings(tmp_path: Path, key: rsa.RSAPrivateKey, **env: str):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp_path / "tenants.json").write_text(json.dumps(REGISTRY))
    return load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_JWT_JWKS_FILE": str(tmp_path / "jwks.json"),
                          "FORLOP_JWT_ISSUER": ISSUER, "FORLOP_JWT_AUDIENCE": AUDIENCE,
                          "FORLOP_TENANTS": str(tmp_path / "tenants.json"), **env})


@pytest.fixture
def api(store: Store, tmp_path: Path, key, contracts_dir: Path):
    settings = trusted_settings(tmp_path, key)
    rt = Runtime(settings, store, FixedClock(AS_OF))
    blueprints = [(messages_bp, SCOPE_ADMIN), (pathway_bp(store, rt.clock), SCOPE_READ)]
    app = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings), blueprints=blueprints,
                             tenants=load_tenants(settings)))
    client = app.test_client()
    events = [json.loads(x) for x in (contracts_dir / "dips-examples.ndjson").read_text().splitlines()]
    mine = [e for e in events if e["pathway"]["id"] != MOVED]
    moved = [dict(e, unit=dict(e["unit"], herId=UNIT_B), patient=dict(e["patient"], municipality="0301"))
             for e in events if e["pathway"]["id"] == MOVED]
    assert client.post("/ingest/dips", json=mine, headers=mint(key, HOSPITAL_A)).status_code == 202
    assert client.post("/ingest/dips", json=moved, headers=mint(key, HOSPITAL_B)).status_code == 202
    rt.drain_outbox(rt.topic_handlers(["pathway"]))
    r = schema.fhir_resources
    with store.read() as conn:
        episodes = {row.pathway_key.split(":", 1)[1]: row.resource for row in conn.execute(
            select(r.c.pathway_key, r.c.resource).where(r.c.resource_type == "EpisodeOfCare"))}
    client.episode = {pid: res["id"] for pid, res in episodes.items()}
    client.patient = {pid: res["patient"]["reference"].split("/")[1] for pid, res in episodes.items()}
    client.moved, client.mine, client.key, client.rt = moved, mine, key, rt
    return client


def _status(api, org: str | None, method: str, target: str, body=None, scopes: list[str] = ALL) -> int:
    headers = mint(api.key, org, scopes)
    resp = api.open(target, method=method, json=body, headers=headers)
    return resp.status_code


# tenant -> expected answer, per route; "A", "B", "C": the pathways WITH_CONSENT, NO_CONSENT, MOVED
MATRIX = [
    # route                                        A-hosp B-hosp k5001 k0301 nat  oper unknown
    ("GET /fhir/EpisodeOfCare/{A}",                (200,  404,   200,  404,  403, 403, 403)),
    ("GET /fhir/EpisodeOfCare/{B}",                (200,  404,   404,  404,  403, 403, 403)),
    ("GET /fhir/EpisodeOfCare/{C}",                (404,  200,   404,  200,  403, 403, 403)),
    ("GET /fhir/Patient/{pA}",                     (200,  404,   200,  404,  403, 403, 403)),
    ("GET /fhir/Patient/{pB}",                     (200,  404,   404,  404,  403, 403, 403)),
    ("GET /fhir/Patient/{pC}",                     (404,  200,   404,  200,  403, 403, 403)),
    ("GET /fhir/EpisodeOfCare",                    (200,  200,   200,  200,  403, 403, 403)),
    ("GET /worklist?unit=8140712",                 (200,  403,   403,  403,  403, 403, 403)),
    ("GET /worklist?unit=8140799",                 (403,  200,   403,  403,  403, 403, 403)),
    ("GET /municipalities/5001/pathways",          (403,  403,   200,  403,  403, 403, 403)),
    ("GET /municipalities/0301/pathways",          (403,  403,   403,  200,  403, 403, 403)),
    ("GET /indicators",                            (200,  200,   403,  403,  200, 403, 403)),
    ("GET /quality",                               (200,  200,   403,  403,  200, 403, 403)),
    ("GET /messages",                              (403,  403,   403,  403,  403, 200, 403)),
    ("GET /dead-letters",                          (403,  403,   403,  403,  403, 200, 403)),
    ("POST /ingest/dips mine",                     (202,  403,   403,  403,  403, 403, 403)),
    ("POST /ingest/dips moved",                    (403,  202,   403,  403,  403, 403, 403)),
]
TENANTS = (HOSPITAL_A, HOSPITAL_B, KOMMUNE_5001, KOMMUNE_0301, NATIONAL, OPERATOR, UNKNOWN)


def test_tenant_route_matrix(api):
    ids = {"A": api.episode[WITH_CONSENT], "B": api.episode[NO_CONSENT], "C": api.episode[MOVED],
           "pA": api.patient[WITH_CONSENT], "pB": api.patient[NO_CONSENT], "pC": api.patient[MOVED]}
    wrong = []
    for route, expected in MATRIX:
        method, target, *what = route.split()
        body = {"mine": api.mine, "moved": api.moved}[what[0]] if what else None
        for org, status in zip(TENANTS, expected, strict=True):
            got = _status(api, org, method, target.format(**ids), body)
            if got != status:
                wrong.append(f"{route} as {org}: {got}, expected {status}")
    assert not wrong, "\n".join(wrong)


def test_search_returns_only_what_the_tenant_reaches(api):
    def found(org: str, target: str) -> set[str]:
        bundle = api.get(target, headers=mint(api.key, org)).json
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    a, b, c = api.episode[WITH_CONSENT], api.episode[NO_CONSENT], api.episode[MOVED]
    assert found(HOSPITAL_A, "/fhir/EpisodeOfCare?_count=100") == {a, b}
    assert found(HOSPITAL_B, "/fhir/EpisodeOfCare?_count=100") == {c}
    assert found(KOMMUNE_5001, "/fhir/EpisodeOfCare?_count=100") == {a}
    assert found(KOMMUNE_0301, "/fhir/EpisodeOfCare?status=active,waitlist,finished&_count=100") <= {c}
    # a search by another tenant's patient finds nothing (and its total says 0, not how many are hidden)
    pc = api.patient[MOVED]
    hidden = api.get(f"/fhir/EpisodeOfCare?patient={pc}&_total=accurate", headers=mint(api.key, HOSPITAL_A)).json
    assert hidden["total"] == 0 and not hidden.get("entry")
    tasks = api.get(f"/fhir/Task?patient={pc}&_count=100", headers=mint(api.key, HOSPITAL_B)).json
    assert tasks.get("entry") and all(e["resource"]["for"]["reference"] == f"Patient/{pc}" for e in tasks["entry"])
    assert not api.get(f"/fhir/Task?patient={pc}", headers=mint(api.key, HOSPITAL_A)).json.get("entry")
    assert found(HOSPITAL_A, "/fhir/Patient?_count=100") == {api.patient[WITH_CONSENT], api.patient[NO_CONSENT]}
    assert found(KOMMUNE_0301, "/fhir/Patient?_count=100") == {pc}


def test_refusals_name_the_unit_and_the_organisation(api):
    resp = api.post("/ingest/dips", json=api.moved, headers=mint(api.key, HOSPITAL_A))
    assert resp.status_code == 403 and UNIT_B in resp.json["issue"][0]["diagnostics"]
    resp = api.get("/worklist?unit=8140799", headers=mint(api.key, HOSPITAL_A))
    assert resp.status_code == 403 and UNIT_B in resp.json["issue"][0]["diagnostics"]
    resp = api.get("/fhir/EpisodeOfCare", headers=mint(api.key, UNKNOWN))
    assert resp.status_code == 403 and UNKNOWN in resp.json["issue"][0]["diagnostics"]
    resp = api.get("/fhir/EpisodeOfCare", headers=mint(api.key, None))
    assert resp.status_code == 403 and "orgnr_parent" in resp.json["issue"][0]["diagnostics"]
    # the municipal overview holds only residents whose consent is in force
    overview = api.get("/municipalities/5001/pathways", headers=mint(api.key, KOMMUNE_5001)).json
    assert [p["pathwayId"] for p in overview["pathways"]] == [WITH_CONSENT]
    # a hospital's worklist and reports cover its own units only
    assert api.get(f"/worklist?unit={UNIT_A}", headers=mint(api.key, HOSPITAL_A)).json["total"] == 2
    assert api.get("/indicators", headers=mint(api.key, HOSPITAL_B)).json["pathways"] == 1


def test_a_child_organisation_in_the_registry_counts_before_its_parent(api):
    child = mint(api.key, UNKNOWN, **{CLAIM_ORGNR_CHILD: HOSPITAL_B, CLAIM_HPR_NUMBER: "9144900"})
    assert api.get(f"/fhir/EpisodeOfCare/{api.episode[MOVED]}", headers=child).status_code == 200
    assert api.get(f"/fhir/EpisodeOfCare/{api.episode[WITH_CONSENT]}", headers=child).status_code == 404


def test_national_statistics_get_aggregates_without_small_cells_or_pathways(api):
    national = mint(api.key, NATIONAL)
    indicators = api.get("/indicators?groupBy=unit", headers=national).json
    assert indicators["pathways"] is None  # three pathways: under 5
    for row in indicators["indicators"]:
        for key in ("done", "met", "metAdjusted", "late", "openOverdue"):
            assert row[key] is None or row[key] == 0 or row[key] >= 5, row
    quality = api.get("/quality", headers=national).json
    assert all("examples" not in kind for kind in quality["kinds"])
    assert all(row["count"] is None or row["count"] >= 5 for row in quality["byUnitMonth"])
    text = json.dumps(indicators) + json.dumps(quality)
    assert "PPR-" not in text and "dips:" not in text
    # a hospital sees its own figures unsuppressed, with its example pathways
    own = api.get("/quality", headers=mint(api.key, HOSPITAL_A)).json
    assert own["pathways"] == 2


def test_the_write_scope_is_still_needed(api):
    assert _status(api, HOSPITAL_A, "POST", "/ingest/dips", api.mine, [SCOPE_READ]) == 403
    assert _status(api, OPERATOR, "GET", "/messages", scopes=[SCOPE_READ]) == 403


def test_the_served_api_answers_a_development_token_401(api, tmp_path, store):
    """A token minted by the embedded run on this data directory (its development key), sent to an API
    that trusts the identity provider's JWKS on the same directory: 401."""
    token = mint_dev_token(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), [SCOPE_READ], org_parent=HOSPITAL_A)
    resp = api.get(f"/fhir/EpisodeOfCare/{api.episode[WITH_CONSENT]}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and "development key" in resp.json["issue"][0]["diagnostics"]


def test_paging_and_every_query_shape_stay_within_the_tenant(api):
    """Keyset pages, several parameters (SQLite's INTERSECT of ranges), several values (a UNION) and
    the no-parameter scan: each restricted in the query, so no page is short or padded by others' rows."""
    a, b = api.episode[WITH_CONSENT], api.episode[NO_CONSENT]
    seen, target = [], "/fhir/EpisodeOfCare?_count=1"
    while target:
        bundle = api.get(target, headers=mint(api.key, HOSPITAL_A)).json
        seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        target = f"{urlsplit(nxt[0]).path}?{urlsplit(nxt[0]).query}" if nxt else None
    assert sorted(seen) == sorted({a, b})
    everything = api.get("/fhir/Task?_count=500", headers=mint(api.key, HOSPITAL_B)).json["entry"]
    status, code = everything[0]["resource"]["status"], everything[0]["resource"]["code"]["coding"][0]["code"]
    pc = api.patient[MOVED]
    own = {HOSPITAL_B: {f"Patient/{pc}"},
           HOSPITAL_A: {f"Patient/{api.patient[WITH_CONSENT]}", f"Patient/{api.patient[NO_CONSENT]}"}}
    for org, patients in own.items():
        both = api.get(f"/fhir/Task?status={status}&code={code}&_total=accurate", headers=mint(api.key, org)).json
        assert both["total"] == len(both["entry"]) > 0
        assert {e["resource"]["for"]["reference"] for e in both["entry"]} <= patients
        union = api.get(f"/fhir/Task?status={status},cancelled,requested&patient={pc}&_total=accurate",
                        headers=mint(api.key, org)).json
        assert (union["total"] > 0) is (org == HOSPITAL_B)


def test_a_deletion_is_told_to_the_tenants_that_reach_its_pathway(api):
    """A withdrawn milestone's Task: hospital A and kommune 5001 (they reach pathway A) get 410 and the
    DELETE in the change feed, hospital B and kommune 0301 a 404 and nothing, as if it never was."""
    task_ids = {e["resource"]["id"] for e in api.get(
        f"/fhir/Task?focus=EpisodeOfCare/{api.episode[WITH_CONSENT]}&_count=500",
        headers=mint(api.key, HOSPITAL_A)).json["entry"]}
    last = [e for e in api.mine if e["pathway"]["id"] == WITH_CONSENT and e["eventType"] == "ppr.document.approved"][-1]
    withdrawal = dict(last, eventId=str(uuid.uuid4()), eventType="ppr.document.deleted",
                      recordedTime="2026-01-04T09:00:00+01:00",
                      document={"id": last["document"]["id"], "reason": "feilregistrering"})
    assert api.post("/ingest/dips", json=withdrawal, headers=mint(api.key, HOSPITAL_A)).status_code == 202
    api.rt.drain_outbox(api.rt.topic_handlers(["pathway"]))
    still = {e["resource"]["id"] for e in api.get(
        f"/fhir/Task?focus=EpisodeOfCare/{api.episode[WITH_CONSENT]}&_count=500",
        headers=mint(api.key, HOSPITAL_A)).json.get("entry", [])}
    gone = task_ids - still
    assert gone, "the withdrawal took no Task away"
    rid = sorted(gone)[0]
    for org, read, seen in ((HOSPITAL_A, 410, True), (KOMMUNE_5001, 410, True),
                            (HOSPITAL_B, 404, False), (KOMMUNE_0301, 404, False)):
        assert api.get(f"/fhir/Task/{rid}", headers=mint(api.key, org)).status_code == read, org
        history = api.get(f"/fhir/Task/{rid}/_history", headers=mint(api.key, org))
        assert history.status_code == (200 if seen else 404), org
        feed = api.get("/fhir/Task/_history?_count=500", headers=mint(api.key, org)).json
        deleted = {e["request"]["url"].split("/")[1] for e in feed.get("entry", []) if e["request"]["method"] == "DELETE"}
        assert (rid in deleted) == seen, org
        if seen:
            assert deleted == gone, org
