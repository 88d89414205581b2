"""The bench's copies of open pathways are what the pipeline would have stored for them.

`forlop bench` tops the replayed database up to 200,000 open pathways by copying its open ones
under new keys ("<key>~c<n>"). The copy is made in SQL (the per-resource Python copy took ~25
minutes for 200,000); these tests hold it against that Python copy, against deriving and mapping
the copied histories again, and against a scanner pass over the originals.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from forlop.config import load_settings
from forlop.fhir import ids
from forlop.storage import Store, schema
from forlop_devtools import bench
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.search_index import index_values
from services.pathway.handlers import PathwayDeps, PathwayResult, handle_events, refresh, scan
from tests.builders import at

AS_OF = at("2026-03-01")
DEPS = PathwayDeps(RuleBook.load(), load_settings({}).topics)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A database of 200 generated pathways, derived at AS_OF; returns it and how many are open."""
    path = tmp_path_factory.mktemp("clone") / "replayed.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    events = [parse_vendor_event("dips", r) for r in generate("dips", 200, 5, as_of=AS_OF)]
    with store.transaction() as conn:
        handle_events(conn, events, AS_OF, DEPS)
    with store.read() as conn:
        p = schema.pathways
        open_n = conn.execute(select(func.count()).select_from(p).where(p.c.episode_status.in_(bench.OPEN))).scalar_one()
    store.dispose()
    assert open_n > 50
    return path, open_n


def _copy(src: Path, dst: Path) -> Store:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return Store(f"sqlite:///{dst}")


def _rows(store: Store, sql: str) -> list[tuple]:
    with store.read() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(sql)]


FHIR = "SELECT resource_type, id, pathway_key, version_id, last_updated, resource FROM fhir_resources ORDER BY 1, 2"
INDEX = "SELECT resource_type, id, param, value FROM fhir_search_index ORDER BY 1, 2, 3, 4"
PATHWAYS = "SELECT * FROM pathways ORDER BY pathway_key"
ALERTS = "SELECT * FROM alerts ORDER BY alert_key"


def _python_clone_fhir(conn: Any, n: int) -> None:
    """The copy `bench._clone_fhir` replaced (~7.5 ms a pathway): each resource's JSON through str.replace."""
    p, r = schema.pathways, schema.fhir_resources
    originals = select(p.c.pathway_key).where(p.c.episode_status.in_(bench.OPEN), p.c.pathway_key.not_like("%~c%"))
    ids_of = dict(conn.execute(select(p.c.pathway_key, p.c.pathway_id).where(p.c.pathway_key.in_(originals))).all())
    owned: dict[str, list[Any]] = {}
    for row in conn.execute(select(r).where(r.c.pathway_key.in_(originals))):
        owned.setdefault(row.pathway_key, []).append(row)
    patients = {f"Patient/{res['id']}": res for res in conn.execute(
        select(r.c.resource).where(r.c.resource_type == "Patient")).scalars()}
    resources, index = [], []
    for key, rows in owned.items():
        new_key = f"{key}~c{n}"
        swap = {ids.episode_id(key): ids.episode_id(new_key), f'"{ids_of[key]}"': f'"{ids_of[key]}~c{n}"',
                f'"{key}/': f'"{new_key}/'}
        for row in rows:
            if row.resource_type == "Task":
                swap[row.id] = ids.task_id(new_key, row.resource["identifier"][0]["value"].rsplit("/", 1)[1])
        for row in rows:
            body = json.dumps(row.resource, ensure_ascii=False)
            for old, new in swap.items():
                body = body.replace(old, new)
            res = json.loads(body)
            resources.append({"resource_type": row.resource_type, "id": res["id"], "pathway_key": new_key,
                              "version_id": row.version_id, "last_updated": row.last_updated, "resource": res})
            index += [{"resource_type": row.resource_type, "id": res["id"], "param": k, "value": v[:300]}
                      for k, v in index_values(res, patients)]
    if resources:
        conn.execute(insert(r), resources)
        conn.execute(insert(schema.fhir_search_index), index)


def test_the_sql_copy_stores_what_the_python_copy_stored(replayed, tmp_path, monkeypatch):
    path, open_n = replayed
    new = _copy(path, tmp_path / "sql.db")
    schema_sql = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    tables_and_indexes, cache = _rows(new, schema_sql), _rows(new, "PRAGMA cache_size")
    assert bench._clone_open_pathways(new, 3 * open_n) == 3 * open_n  # two copies
    assert _rows(new, schema_sql) == tables_and_indexes  # the search index's indexes were made again
    assert _rows(new, "SELECT name FROM sqlite_temp_master") == []
    assert _rows(new, "PRAGMA cache_size") == cache  # the connection as it was
    new_fhir, new_index = _rows(new, FHIR), _rows(new, INDEX)
    new.dispose()
    monkeypatch.setattr(bench, "_clone_fhir", _python_clone_fhir)
    old = _copy(path, tmp_path / "python.db")
    bench._clone_open_pathways(old, 3 * open_n)
    old_fhir, old_index = _rows(old, FHIR), _rows(old, INDEX)
    old.dispose()

    assert new_fhir == old_fhir  # ids, owner, version, time stamp and the JSON text byte for byte
    assert new_index == old_index
    copied = [row for row in new_fhir if row[2] and row[2].endswith("~c2")]
    assert {row[0] for row in copied} == {"EpisodeOfCare", "Task"}
    assert len({row[2] for row in copied}) == open_n
    assert len([row for row in new_index if row[1] in {c[1] for c in copied}]) > 10 * len(copied) // 2


def test_deriving_and_mapping_the_copies_again_changes_nothing(replayed, tmp_path):
    """Status rows (key, pathway id, event ids, history hash), FHIR and its index: as the pipeline stores them."""
    path, open_n = replayed
    store = _copy(path, tmp_path / "copies.db")
    bench._clone_open_pathways(store, 2 * open_n)
    before = [_rows(store, sql) for sql in (PATHWAYS, FHIR, INDEX, ALERTS)]
    with store.read() as conn:
        p = schema.pathways
        copies = list(conn.execute(select(p.c.pathway_key).where(p.c.pathway_key.like("%~c1"))).scalars())
    assert len(copies) == open_n
    result = PathwayResult()
    with store.transaction() as conn:
        refresh(conn, copies, AS_OF, DEPS, result)
    assert sorted(result.refreshed) == sorted(copies)
    assert result.status_changes == 0 and result.alerts == 0
    after = [_rows(store, sql) for sql in (PATHWAYS, FHIR, INDEX, ALERTS)]
    store.dispose()
    for was, now in zip(before, after, strict=True):
        assert was == now


def test_a_scanner_pass_does_to_each_copy_what_it_does_to_its_original(replayed, tmp_path):
    path, open_n = replayed
    store = _copy(path, tmp_path / "scan.db")
    bench._clone_open_pathways(store, 2 * open_n)
    p, r = schema.pathways, schema.fhir_resources
    tasks = select(func.count()).select_from(r).where(r.c.resource_type == "Task")
    o, a = schema.outbox, schema.alerts

    def alerts_and_changes(conn: Any, after_id: int = 0) -> Counter:
        """(alerts, status-changed records after `after_id`) of the originals (False) and the copies (True)."""
        keys = conn.execute(select(a.c.pathway_key)).scalars()
        records = conn.execute(select(o.c.value).where(o.c.topic == DEPS.topics.status_changed, o.c.id > after_id))
        return Counter([("alert", key.endswith("~c1")) for key in keys]
                       + [("changed", json.loads(v)["pathway_key"].endswith("~c1")) for v in records.scalars()])

    with store.transaction() as conn:
        tasks_before = conn.execute(tasks).scalar_one()
        last_id = conn.execute(select(func.max(o.c.id))).scalar_one()
        before = alerts_and_changes(conn, last_id)
        conn.execute(update(p).where(p.c.episode_status.in_(bench.OPEN)).values(next_check_on=AS_OF.date()))
    result = PathwayResult()
    while True:  # every open pathway due at once, a month on
        with store.transaction() as conn:
            one = scan(conn, AS_OF + timedelta(days=31), DEPS, limit=100)
        if not one.refreshed:
            break
        result.refreshed += one.refreshed
        result.status_changes += one.status_changes
        result.alerts += one.alerts
    assert len(result.refreshed) == 2 * open_n and result.status_changes > 0
    with store.read() as conn:
        assert conn.execute(tasks).scalar_one() == tasks_before  # the copies' Tasks were updated, none inserted
        statuses = dict(conn.execute(select(p.c.pathway_key, p.c.status).where(p.c.episode_status.in_(bench.OPEN))).all())
        task_rows = conn.execute(select(r.c.pathway_key, r.c.version_id, r.c.resource).where(r.c.resource_type == "Task"))
        task_state = {(row.pathway_key, row.resource["identifier"][0]["value"].rsplit("/", 1)[1]):
                      (row.version_id, row.resource.get("businessStatus")) for row in task_rows}
        after = alerts_and_changes(conn, last_id)
    store.dispose()
    assert before[("alert", True)] == before[("alert", False)]  # the originals' alerts were copied
    # the pass's alerts and status changes, the copies' under their own keys (none dropped as a duplicate)
    new = after - before
    assert new[("alert", True)] == new[("alert", False)] > 0
    assert new[("changed", True)] == new[("changed", False)] == result.status_changes // 2
    originals = [key for key in statuses if not key.endswith("~c1")]
    for key in originals:
        copy = statuses[f"{key}~c1"]
        assert (copy["pathway_key"], copy["pathway_id"]) == (f"{key}~c1", statuses[key]["pathway_id"] + "~c1")
        assert copy["milestones"] == [
            {**m, "event_ids": [e + "~c1" for e in m["event_ids"]]} for m in statuses[key]["milestones"]
        ]
    retimed = 0
    for (key, milestone), state in task_state.items():
        if key in statuses and not key.endswith("~c1"):
            assert task_state[(f"{key}~c1", milestone)] == state
            retimed += state[0] > 1
    assert retimed > 0
