"""The HTTP API as an EHR vendor and a FHIR client use it: intake, auth, FHIR read and search."""

from __future__ import annotations

import json

import pytest

from app.bootstrap import Runtime
from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, TokenVerifier, mint_dev_token
from forlop.clock import FixedClock, parse_time
from forlop.config import load_settings
from forlop.storage import Store
from services.api.app import ApiDeps, create_app

AS_OF = parse_time("2026-01-05T10:00:00+01:00")


@pytest.fixture
def api(store: Store, tmp_path, contracts_dir):
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    rt = Runtime(settings, store, FixedClock(AS_OF))
    app = create_app(ApiDeps(settings, store, rt.clock, TokenVerifier(settings)))
    client = app.test_client()
    client.rt = rt
    client.write = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_WRITE_EVENTS])}"}
    client.read = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"}
    client.examples = {
        v: [json.loads(x) for x in (contracts_dir / f"{v}-examples.ndjson").read_text().splitlines()]
        for v in ("dips", "esp")
    }
    return client


def process(api) -> None:
    """Run the pathway and messaging handlers on what the intake wrote (what the consumers do)."""
    api.rt.drain_outbox(api.rt.topic_handlers(["pathway"]))


def test_post_one_event_an_array_and_ndjson(api):
    dips = api.examples["dips"]
    one = api.post("/ingest/dips", json=dips[0], headers=api.write)
    assert one.status_code == 202 and one.json["accepted"] == 1
    array = api.post("/ingest/dips", json=dips[:3], headers=api.write)
    assert (array.json["accepted"], array.json["duplicates"]) == (2, 1)  # idempotent on eventId
    ndjson = "\n".join(json.dumps(e) for e in api.examples["esp"])
    nd = api.post("/ingest/esp", data=ndjson, headers=api.write | {"Content-Type": "application/x-ndjson"})
    assert nd.status_code == 202 and nd.json["accepted"] == len(api.examples["esp"])
    again = api.post("/ingest/esp", data=ndjson, headers=api.write | {"Content-Type": "application/x-ndjson"})
    assert (again.json["accepted"], again.json["duplicates"]) == (0, len(api.examples["esp"]))


def test_a_bad_batch_is_refused_whole_with_every_problem(api):
    good, bad = api.examples["dips"][0], dict(api.examples["dips"][1])
    bad["patient"] = dict(bad["patient"], nationalId="13837033318")
    bad["pathway"] = dict(bad["pathway"], type="D99")
    resp = api.post("/ingest/dips", json=[good, bad], headers=api.write)
    assert resp.status_code == 422 and resp.content_type.startswith("application/fhir+json")
    outcome = resp.json
    assert outcome["resourceType"] == "OperationOutcome"
    where = {i["expression"][0] for i in outcome["issue"]}
    assert {"[1].patient.nationalId", "[1].pathway.type"} <= where
    assert all(i["severity"] == "error" for i in outcome["issue"])
    assert api.post("/ingest/dips", json=[good], headers=api.write).json["accepted"] == 1  # nothing was kept


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [(b"{not json", "application/json", 400), (b"", "application/json", 400), (b"[]", "application/json", 400)],
)
def test_unreadable_bodies_are_400_operation_outcomes(api, body, ctype, status):
    resp = api.post("/ingest/esp", data=body, headers=api.write | {"Content-Type": ctype})
    assert resp.status_code == status and resp.json["resourceType"] == "OperationOutcome"


def test_auth_401_403_and_unknown_source(api):
    ev = api.examples["dips"][0]
    assert api.post("/ingest/dips", json=ev).status_code == 401
    forbidden = api.post("/ingest/dips", json=ev, headers=api.read)
    assert forbidden.status_code == 403 and forbidden.json["issue"][0]["code"] == "forbidden"
    assert api.get("/fhir/EpisodeOfCare", headers=api.write).status_code == 403
    expired = mint_dev_token(api.rt.settings, [SCOPE_READ], ttl_s=-60)
    assert api.get("/fhir/EpisodeOfCare", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert api.post("/ingest/cerner", json=ev, headers=api.write).status_code == 404


def test_a_deletion_before_its_target_and_duplicates(api):
    """The withdrawal arrives first; then the target; the result is as if neither happened."""
    dips = api.examples["dips"]
    pathway = [e for e in dips if e["pathway"]["id"] == "PPR-1810111"]
    target = pathway[-1]  # the evaluation of 2026-01-02
    deletion = dict(target, eventId="0c6f7b1e-0000-4000-8000-00000000dead", eventType="ppr.document.deleted",
                    recordedTime="2026-01-04T09:00:00+01:00",
                    document={"id": target["document"]["id"], "reason": "feilregistrering"})
    assert api.post("/ingest/dips", json=deletion, headers=api.write).status_code == 202
    assert api.post("/ingest/dips", json=pathway, headers=api.write).json["accepted"] == len(pathway)
    assert api.post("/ingest/dips", json=pathway, headers=api.write).json["duplicates"] == len(pathway)
    process(api)
    with_deletion = _episode_tasks(api, "PPR-1810111")

    # as if the evaluation never happened: the first evaluation is still open, due on 2026-01-05
    evaluations = [t for t in with_deletion if t["code"]["coding"][0]["code"] == "evaluation"]
    assert len(evaluations) == 1
    assert evaluations[0]["status"] == "requested"
    assert evaluations[0]["restriction"]["period"]["end"] == "2026-01-05"
    assert evaluations[0]["businessStatus"]["coding"][0]["code"] == "due-soon"


def _episode_tasks(api, pathway_id: str) -> list[dict]:
    bundle = api.get(f"/fhir/EpisodeOfCare?identifier={pathway_id}", headers=api.read).json
    episode = bundle["entry"][0]["resource"]
    tasks = api.get(f"/fhir/Task?focus=EpisodeOfCare/{episode['id']}", headers=api.read).json
    return [e["resource"] for e in tasks["entry"]]


def test_fhir_read_search_paging_and_errors(api):
    for vendor in ("dips", "esp"):
        api.post(f"/ingest/{vendor}", json=api.examples[vendor], headers=api.write)
    process(api)
    everything = api.get("/fhir/EpisodeOfCare", headers=api.read)
    assert everything.content_type.startswith("application/fhir+json")
    assert everything.json["type"] == "searchset" and everything.json["total"] == 6
    page = api.get("/fhir/EpisodeOfCare?_count=4", headers=api.read).json
    assert len(page["entry"]) == 4 and any(link["relation"] == "next" for link in page["link"])
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest = api.get(nxt.replace("http://localhost:8080", ""), headers=api.read).json
    assert len(rest["entry"]) == 2
    assert {e["resource"]["id"] for e in page["entry"]}.isdisjoint({e["resource"]["id"] for e in rest["entry"]})

    tsb = api.get("/fhir/EpisodeOfCare?type=D01&status=active", headers=api.read).json
    assert tsb["total"] == 2
    episode = tsb["entry"][0]["resource"]
    read = api.get(f"/fhir/EpisodeOfCare/{episode['id']}", headers=api.read)
    assert read.status_code == 200 and read.json["id"] == episode["id"] and read.headers["ETag"].startswith('W/"')
    overdue = api.get("/fhir/Task?business-status=overdue", headers=api.read).json
    assert overdue["total"] == 2  # the two TSB pathways' first evaluations (due 2025-11-19)
    org = episode["managingOrganization"]["reference"].split("/")[1]
    by_org = api.get(f"/fhir/EpisodeOfCare?organization={org}", headers=api.read).json
    assert by_org["total"] >= 1

    unknown = api.get("/fhir/EpisodeOfCare?colour=blue", headers=api.read)
    assert unknown.status_code == 400 and unknown.json["issue"][0]["code"] == "not-supported"
    assert api.get("/fhir/EpisodeOfCare?_count=many", headers=api.read).status_code == 400
    missing = api.get("/fhir/EpisodeOfCare/does-not-exist", headers=api.read)
    assert missing.status_code == 404 and missing.json["resourceType"] == "OperationOutcome"
    assert api.get("/fhir/Observation", headers=api.read).status_code == 404


def _follow(api, url: str) -> tuple[list[str], list[dict]]:
    """Every page of a search by its next links: the ids in order and the Bundles."""
    ids, bundles = [], []
    while url:
        bundle = api.get(url.replace("http://localhost:8080", ""), headers=api.read).json
        bundles.append(bundle)
        ids += [e["resource"]["id"] for e in bundle["entry"]]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    return ids, bundles


def test_fhir_search_total_only_when_known_or_asked_and_keyset_next_links(api):
    for vendor in ("dips", "esp"):
        api.post(f"/ingest/{vendor}", json=api.examples[vendor], headers=api.write)
    process(api)
    every = api.get("/fhir/Task?_count=500", headers=api.read).json
    all_ids = [e["resource"]["id"] for e in every["entry"]]
    assert every["total"] == len(all_ids) > 7 and all_ids == sorted(all_ids)  # one page: its size is the total

    ids, bundles = _follow(api, "/fhir/Task?_count=3")
    assert ids == all_ids  # no match skipped or repeated across pages
    assert all("total" not in b for b in bundles[:-1])  # not counted: more pages follow
    assert all("_cursor=" in link["url"] for b in bundles[:-1] for link in b["link"] if link["relation"] == "next")
    assert "total" not in bundles[-1]  # reached by a cursor: what came before was not counted
    assert not any(link["relation"] == "next" for link in bundles[-1]["link"])

    counted = api.get("/fhir/Task?_count=3&_total=accurate", headers=api.read).json
    assert counted["total"] == len(all_ids) and len(counted["entry"]) == 3
    only_total = api.get("/fhir/Task?_count=0", headers=api.read).json
    assert only_total["total"] == len(all_ids) and only_total["entry"] == []
    assert api.get("/fhir/Task?_count=3&_total=none", headers=api.read).json.get("total") is None
    by_offset = api.get(f"/fhir/Task?_count=3&_offset={len(all_ids) - 2}", headers=api.read).json
    assert [e["resource"]["id"] for e in by_offset["entry"]] == all_ids[-2:] and by_offset["total"] == len(all_ids)
    assert any(link["relation"] == "previous" for link in by_offset["link"])

    bad_total = api.get("/fhir/Task?_total=maybe", headers=api.read)
    assert bad_total.status_code == 400 and bad_total.json["issue"][0]["expression"] == ["_total"]
    bad_cursor = api.get("/fhir/Task?_cursor=not%20an%20id", headers=api.read)
    assert bad_cursor.status_code == 400 and bad_cursor.json["issue"][0]["expression"] == ["_cursor"]


def test_fhir_search_combining_parameters_and_values(api):
    for vendor in ("dips", "esp"):
        api.post(f"/ingest/{vendor}", json=api.examples[vendor], headers=api.write)
    process(api)
    tasks = [e["resource"] for e in api.get("/fhir/Task?_count=500", headers=api.read).json["entry"]]

    def code(task: dict, field: str) -> str | None:  # a milestone without a deadline has no businessStatus
        return task[field]["coding"][0]["code"] if field in task else None

    open_late = sorted(t["id"] for t in tasks if t["status"] == "requested"
                       and code(t, "businessStatus") in ("overdue", "due-soon"))
    assert open_late  # the examples have some
    for query in ("status=requested&business-status=overdue,due-soon",
                  "business-status=due-soon,overdue&status=requested&_count=1"):
        ids, _ = _follow(api, f"/fhir/Task?{query}")
        assert ids == open_late, query
    evaluations = sorted(t["id"] for t in tasks if code(t, "code") == "evaluation" and t["status"] == "requested")
    ids, _ = _follow(api, "/fhir/Task?code=evaluation&status=requested&status=requested,cancelled&_count=2")
    assert ids == evaluations


def test_health_and_readiness(api, store):
    assert api.get("/healthz").json == {"status": "alive"}
    assert api.get("/readyz").status_code == 200
    broken = create_app(ApiDeps(api.rt.settings, Store("postgresql://postgres@127.0.0.1:1/test"), api.rt.clock,
                                TokenVerifier(api.rt.settings)))
    assert broken.test_client().get("/readyz").status_code == 503
