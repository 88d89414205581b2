"""Versions and the change feed over HTTP, on both stores: vread, instance and type history with
keyset paging, deletions as history entries and 410 Gone, ETag / Last-Modified and their 304s,
`_lastUpdated` and `_sort` on every type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from forlop.storage import Store
from forlop_devtools.fuzz_api import AS_OF, ServedApi, serve_api, stop_api
from services.pathway.adapters import fhir_repository
from services.pathway.domain.search_index import SEARCH_PARAMS
from tests.api.conftest import outcome

T0 = AS_OF


def _http(at: datetime, usegmt: bool = True) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=usegmt)


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[ServedApi]:
    served = serve_api(store, tmp_path, None)
    try:
        yield served
    finally:
        stop_api(served)


def _episode(status: str) -> dict:
    return {"resourceType": "EpisodeOfCare", "id": "e1", "status": status, "patient": {"reference": "Patient/p1"}}


def _task(tid: str, status: str = "requested") -> dict:
    return {"resourceType": "Task", "id": tid, "status": status, "intent": "plan",
            "focus": {"reference": "EpisodeOfCare/e1"}, "for": {"reference": "Patient/p1"}}


PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:x", "value": "1"}]}


def _write(api: ServedApi, resources: list[dict], at: datetime) -> None:
    with api.rt.store.transaction() as conn:
        fhir_repository.upsert_resources(conn, resources, "dips:P1", at)


def _get(api: ServedApi, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
    status, head, body = api.request("GET", target, headers=headers)
    return status, head, json.loads(body) if body else {}


def _all_pages(api: ServedApi, target: str) -> list[dict]:
    """Every entry of a paged Bundle, following next links (relative to the server) to the end."""
    entries: list[dict] = []
    while target:
        status, _, bundle = _get(api, target)
        assert status == 200, bundle
        entries += bundle.get("entry", [])
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        target = "" if not nxt else (lambda u: f"{u.path}?{u.query}")(urlsplit(nxt[0]))
    return entries


def _story(api: ServedApi) -> None:
    """t1 and t2 created at T0; at T0+1h the episode and t1 change and t2 goes (a withdrawn milestone)."""
    _write(api, [PATIENT, _episode("waitlist"), _task("t1"), _task("t2")], T0)
    _write(api, [PATIENT, _episode("active"), _task("t1", "completed")], T0 + timedelta(hours=1))


def test_vread_history_and_a_deletion(api: ServedApi):
    _story(api)
    status, head, task = _get(api, "/fhir/Task/t1")
    assert status == 200 and task["meta"]["versionId"] == "2" and task["status"] == "completed"
    assert head["etag"] == 'W/"2"'
    assert head["last-modified"] == _http(T0 + timedelta(hours=1), usegmt=True)
    status, _, first = _get(api, "/fhir/Task/t1/_history/1")
    assert status == 200 and first["status"] == "requested" and first["meta"]["versionId"] == "1"
    assert _get(api, "/fhir/Task/t1/_history/3")[0] == 404
    assert _get(api, "/fhir/Task/t1/_history/x")[0] == 404

    # the withdrawn milestone: 410 Gone, its deletion a version of its own
    status, head, body = _get(api, "/fhir/Task/t2")
    assert status == 410 and outcome(json.dumps(body).encode())["issue"][0]["code"] == "deleted"
    assert head["etag"] == 'W/"2"'
    assert _get(api, "/fhir/Task/t2/_history/2")[0] == 410
    assert _get(api, "/fhir/Task/t2/_history/1")[0] == 200
    status, _, bundle = _get(api, "/fhir/Task/t2/_history")
    assert bundle["type"] == "history"
    assert [(e["request"]["method"], e["response"]["etag"]) for e in bundle["entry"]] == [
        ("DELETE", 'W/"2"'), ("POST", 'W/"1"')]
    assert "resource" not in bundle["entry"][0]
    assert _get(api, "/fhir/Task/nope/_history")[0] == 404

    # made again (the milestone came back): its versions go on
    _write(api, [PATIENT, _episode("active"), _task("t1", "completed"), _task("t2")], T0 + timedelta(hours=2))
    status, head, again = _get(api, "/fhir/Task/t2")
    assert status == 200 and again["meta"]["versionId"] == "3" and head["etag"] == 'W/"3"'
    methods = [e["request"]["method"] for e in _get(api, "/fhir/Task/t2/_history")[2]["entry"]]
    assert methods == ["PUT", "DELETE", "POST"]


def test_type_history_since_and_keyset_paging(api: ServedApi):
    _story(api)
    every = _all_pages(api, "/fhir/Task/_history?_count=1")
    assert [(e["fullUrl"].rsplit("/", 1)[1], e["response"]["etag"]) for e in every] == [
        ("t2", 'W/"2"'), ("t1", 'W/"2"'), ("t2", 'W/"1"'), ("t1", 'W/"1"')]  # newest first, each once
    since = (T0 + timedelta(minutes=30)).isoformat()
    status, _, bundle = _get(api, f"/fhir/Task/_history?_since={since.replace('+', '%2B')}")
    assert [(e["request"]["method"], e["fullUrl"].rsplit("/", 1)[1]) for e in bundle["entry"]] == [
        ("DELETE", "t2"), ("PUT", "t1")]
    # the Bundle says up to when it is complete: the request's instant less the settle window
    stamp = datetime.fromisoformat(bundle["meta"]["lastUpdated"])
    assert stamp.utcoffset() == timedelta(0) and stamp <= T0
    # a poller's next step: nothing changed since the last Bundle's stamp, more than the window ago
    api.rt.clock.set(T0 + timedelta(hours=3))
    stamp = _get(api, "/fhir/Task/_history")[2]["meta"]["lastUpdated"]
    _write(api, [PATIENT, _episode("finished"), _task("t1", "completed")], T0 + timedelta(hours=4))
    changed = _get(api, f"/fhir/EpisodeOfCare/_history?_since={stamp.replace('+', '%2B')}")[2]["entry"]
    assert [e["resource"]["status"] for e in changed] == ["finished"]
    assert _get(api, f"/fhir/Task/_history?_since={stamp.replace('+', '%2B')}")[2].get("entry", []) == []


@pytest.mark.parametrize("query", ["_since=2026-01-05T10:00:00", "_since=yesterday", "_count=0", "_cursor=x_y_z",
                                   "_cursor=2026-01-05T09:00:00.000000Z_t1_0", "status=requested"])
def test_history_parameters_are_checked(api: ServedApi, query: str):
    status, _, body = _get(api, f"/fhir/Task/_history?{query}")
    assert status == 400, body
    assert outcome(json.dumps(body).encode())["issue"][0]["expression"] == [query.split("=")[0]]


def test_conditional_reads(api: ServedApi):
    _story(api)
    assert _get(api, "/fhir/Task/t1", {"If-None-Match": 'W/"2"'})[0] == 304
    assert _get(api, "/fhir/Task/t1", {"If-None-Match": '"2"'})[0] == 304
    assert _get(api, "/fhir/Task/t1", {"If-None-Match": 'W/"1"'})[0] == 200
    changed = T0 + timedelta(hours=1)
    assert _get(api, "/fhir/Task/t1", {"If-Modified-Since": _http(changed, usegmt=True)})[0] == 304
    before = _http(changed - timedelta(seconds=1), usegmt=True)
    assert _get(api, "/fhir/Task/t1", {"If-Modified-Since": before})[0] == 200
    assert _get(api, "/fhir/Task/t1", {"If-Modified-Since": "not a date"})[0] == 200
    # the ETag decides when both are given
    assert _get(api, "/fhir/Task/t1", {"If-None-Match": 'W/"1"',
                                       "If-Modified-Since": _http(changed, usegmt=True)})[0] == 200
    status, head, _ = _get(api, "/fhir/Task/t1/_history/1", {"If-None-Match": 'W/"1"'})
    assert status == 304 and head["etag"] == 'W/"1"'


def _ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


@pytest.mark.parametrize("rtype", list(SEARCH_PARAMS))
def test_last_updated_and_sort_on_every_type(api: ServedApi, rtype: str):
    resources = [
        {"EpisodeOfCare": _episode("waitlist") | {"id": f"e{i}"}, "Task": _task(f"t{i}"),
         "Patient": PATIENT | {"id": f"p{i}"}, "Organization": {"resourceType": "Organization", "id": f"o{i}"},
         "Practitioner": {"resourceType": "Practitioner", "id": f"h{i}"}}[rtype]
        for i in range(3)]
    for i, res in enumerate(resources):  # id order is the reverse of lastUpdated order
        with api.rt.store.transaction() as conn:
            fhir_repository.upsert_resources(conn, [res], None, T0 + timedelta(hours=3 - i))
    ids = [r["id"] for r in resources]
    at = (T0 + timedelta(hours=2)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = {f"_lastUpdated=ge{at}": [ids[0], ids[1]], f"_lastUpdated=gt{at}": [ids[0]],
             f"_lastUpdated=lt{at}": [ids[2]], f"_lastUpdated=le{at}": [ids[1], ids[2]],
             f"_lastUpdated={at}": [ids[1]], f"_lastUpdated=gt{at[:10]}&_lastUpdated=lt2099": [],
             "_sort=_lastUpdated": ids[::-1], "_sort=-_lastUpdated": ids,
             f"_sort=-_lastUpdated&_lastUpdated=le{at}": ids[1:]}
    for query, expected in cases.items():
        status, _, bundle = _get(api, f"/fhir/{rtype}?{query}")
        assert status == 200, (query, bundle)
        got = _ids(bundle)
        assert (got if "_sort" in query else sorted(got)) == (expected if "_sort" in query else sorted(expected)), query
    # a sorted search pages by offset
    first = _get(api, f"/fhir/{rtype}?_sort=-_lastUpdated&_count=2")[2]
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"][0]
    assert ("_offset", "2") in parse_qsl(urlsplit(nxt).query)
    assert _ids(first) + _ids(_get(api, f"{urlsplit(nxt).path}?{urlsplit(nxt).query}")[2]) == ids
    for bad in ("_lastUpdated=sa2026", "_lastUpdated=2026-13", "_sort=status", "_sort=--_lastUpdated", "_lastUpdated=ge2026&_lastUpdated=le2027&_lastUpdated=eq2026"):
        assert _get(api, f"/fhir/{rtype}?{bad}")[0] == 400, bad
