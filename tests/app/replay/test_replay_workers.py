"""A replay with worker processes stores what a replay in one process stores.

The workers (`app.replay.workers`) check records, derive pathways and build messages ahead of
the main process's writes; the main process uses their results only where they still hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from app.bootstrap import Runtime
from app.replay.pipeline import replay_file
from forlop.clock import FixedClock
from forlop.config import load_settings
from forlop.storage import Store, schema
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.messaging.handlers import handle_parsed_status_changes
from services.messaging.prebuild import PrebuiltMessage, prebuild_messages
from services.pathway.handlers import PathwayResult, derive_pathway, handle_events, load_history, refresh
from tests.builders import at

AS_OF = at("2026-03-01")


@pytest.fixture
def replay_file_with_rejects(tmp_path: Path) -> Path:
    """30 pathways' events, each line twice in places (duplicates), and two records no schema accepts."""
    lines = [json.dumps(r) for r in generate("dips", 30, 21, as_of=AS_OF)]
    lines[5:5] = ['{"not": "a dips document"}', "{broken json"]
    lines += lines[10:20]
    path = tmp_path / "dips.ndjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def _table(store: Store, table, skip: tuple[str, ...] = ()) -> list[tuple]:
    cols = [c for c in table.c if c.name not in skip]
    with store.read() as conn:
        return sorted(tuple(map(repr, row)) for row in conn.execute(select(*cols)))


def _messages(store: Store) -> list[tuple]:
    """The messages with their own ids taken out of them (uuids, new per run): XML included."""
    m = schema.messages
    with store.read() as conn:
        rows = conn.execute(select(m)).mappings().all()
    return sorted(
        (r["dedupe_key"], r["status"], r["status_reason"], json.dumps(r["details"], sort_keys=True),
         (r["xml"] or "").replace(r["id"], "<msg-id>"))
        for r in rows
    )


def test_a_replay_with_workers_stores_what_one_process_stores(
    store, another_store, replay_file_with_rejects, contracts_dir, monkeypatch
):
    settings = load_settings({})
    # Small chunks: several derive-ahead chunks in flight, written while the next is derived.
    monkeypatch.setattr("app.replay.pipeline.AHEAD_CHUNK", 4)
    built_here: list[str] = []
    derived_here: list[str] = []
    import services.messaging.apply as apply
    import services.pathway.handlers as pathway_service

    real_build, real_derive = apply.build_for, pathway_service.derive_pathway
    monkeypatch.setattr(apply, "build_for", lambda row, *a: built_here.append(row["id"]) or real_build(row, *a))
    monkeypatch.setattr(pathway_service, "derive_pathway",
                        lambda key, *a, **k: derived_here.append(key) or real_derive(key, *a, **k))

    with_workers = replay_file(Runtime(settings, store, FixedClock(AS_OF)), "dips", replay_file_with_rejects,
                               batch_size=25, progress=None, workers=1)
    # Every derivation and message came from the worker (this process's functions were not called).
    assert derived_here == [] and built_here == []

    alone = replay_file(Runtime(settings, another_store, FixedClock(AS_OF)), "dips", replay_file_with_rejects,
                        batch_size=25, progress=None, workers=0)
    assert derived_here and built_here  # the comparison run did compute in this process

    assert (with_workers.read, with_workers.accepted, with_workers.duplicates, with_workers.rejected) == (
        alone.read, alone.accepted, alone.duplicates, alone.rejected)
    assert with_workers.rejected == 2 and with_workers.duplicates >= 10
    assert (with_workers.pathways, with_workers.status_changes) == (alone.pathways, alone.status_changes) == (30, 30)
    assert _messages(store) == _messages(another_store) and len(_messages(store)) > 30
    assert any("<msg-id>" in m[4] for m in _messages(store))  # queued messages carry their own id
    for table, skip in (
        (schema.pathways, ()),
        (schema.pathway_events, ()),
        (schema.fhir_resources, ()),
        (schema.fhir_search_index, ()),
        (schema.alerts, ()),
        (schema.inbound_events, ()),
        (schema.dead_letters, ("id",)),
    ):
        assert _table(store, table, skip) == _table(another_store, table, skip), table.name
    with store.read() as conn:
        assert conn.execute(select(schema.pathway_refresh_queue)).all() == []


def test_pathways_queued_while_the_workers_derive_are_derived_too(store, tmp_path, monkeypatch):
    """A pass of derive-ahead reads the queue in key order without claiming it; a pathway queued
    meanwhile before the pass's position is found by the pass that starts again from the first key."""
    first = [json.dumps(r) for r in generate("dips", 8, 31, as_of=AS_OF)]
    late = [parse_vendor_event("dips", r) for r in generate("dips", 1, 32, as_of=AS_OF)]
    late = [ev.with_(pathway_id="0-queued-meanwhile", event_id=f"{ev.event_id}-late") for ev in late]
    path = tmp_path / "dips.ndjson"
    path.write_text("\n".join(first) + "\n")
    rt = Runtime(load_settings({}), store, FixedClock(AS_OF))
    monkeypatch.setattr("app.replay.pipeline.AHEAD_CHUNK", 3)

    import app.replay.pipeline as replay

    real_unpacked = replay.unpacked
    derive_calls = []

    def unpacked(future):
        result = real_unpacked(future)
        if result and hasattr(result[0], "status"):  # a derive-ahead chunk, not a batch of checked records
            derive_calls.append(len(result))
            if len(derive_calls) == 2:  # the pass is past the first keys: queue one that sorts first
                with store.transaction() as conn:
                    handle_events(conn, late, AS_OF, rt.pathway_deps, defer=True)
        return result

    monkeypatch.setattr(replay, "unpacked", unpacked)
    counts = replay_file(rt, "dips", path, progress=None, workers=1)
    assert counts.pathways == 9
    with store.read() as conn:
        keys = set(conn.execute(select(schema.pathways.c.pathway_key)).scalars())
        assert late[0].pathway_key in keys and len(keys) == 9
        assert conn.execute(select(schema.pathway_refresh_queue)).all() == []


def _events(n: int, seed: int):
    return [parse_vendor_event("dips", r) for r in generate("dips", n, seed, as_of=AS_OF)]


def test_a_derivation_of_an_older_history_or_another_time_is_derived_again(store, another_store):
    """The main process uses a worker's derivation only for the history it loads in its own
    write transaction, at the same `now`: events stored in between make it derive again."""
    deps = Runtime(load_settings({}), store).pathway_deps
    events = _events(1, 41)
    assert len(events) >= 3
    key = events[0].pathway_key
    with store.transaction() as conn:
        handle_events(conn, events[:2], AS_OF, deps, defer=True)
        older = derive_pathway(key, load_history(conn, [key])[key], AS_OF, deps)
        handle_events(conn, events[2:], AS_OF, deps, defer=True)  # the history grew after the derivation
        current = derive_pathway(key, load_history(conn, [key])[key], AS_OF, deps)
        earlier = derive_pathway(key, load_history(conn, [key])[key], at("2026-02-01"), deps)
        assert older.history_hash != current.history_hash and earlier.history_hash == current.history_hash
    with another_store.transaction() as conn:
        handle_events(conn, events, AS_OF, deps)  # derived in the transaction, from the whole history
    for stale in (older, earlier):
        with store.transaction() as conn:
            conn.execute(delete(schema.pathways))
            refresh(conn, [key], AS_OF, deps, PathwayResult(), derived={key: stale})
        assert _table(store, schema.pathways) == _table(another_store, schema.pathways)


def test_a_prebuilt_message_is_used_only_for_the_row_it_was_built_for(store, contracts_dir):
    """Prebuilt XML is taken for a new row with the same dedupe key, details and time; any other
    prebuilt message (another recipient, another time) is dropped and the row built here."""
    settings = load_settings({})
    rt = Runtime(settings, store, FixedClock(AS_OF))
    deps = rt.messaging.deps
    events = sorted(_events(3, 51), key=lambda ev: (ev.occurred_at, ev.event_id))
    by_pathway: dict[str, list] = {}
    for ev in events:
        by_pathway.setdefault(ev.pathway_key, []).append(ev)
    changes, prebuilt = [], {}
    for i, (key, history) in enumerate(sorted(by_pathway.items())):
        status = derive_pathway(key, history, AS_OF, rt.pathway_deps).status
        changes.append(({"pathway_key": key, "pathway_id": history[0].pathway_id, "status": status}, history))
        ready = prebuild_messages(history, status, AS_OF, deps)
        if i == 1:  # built for another recipient: not this row's
            ready = {k: _with(m, details={**m.details, "recipient": {"her_id": "1", "name": "Annen"}})
                     for k, m in ready.items()}
        elif i == 2:  # built at another time
            ready = {k: _with(m, gen_date=at("2026-02-01")) for k, m in ready.items()}
        prebuilt.update(ready)
    assert len(prebuilt) >= 3
    with store.transaction() as conn:
        handle_parsed_status_changes(conn, changes, AS_OF, deps, prebuilt=prebuilt)
    m = schema.messages
    with store.read() as conn:
        rows = {r.dedupe_key: r for r in conn.execute(select(m.c.dedupe_key, m.c.id, m.c.xml, m.c.pathway_key))}
    first = sorted(by_pathway)[0]
    used = [k for k, r in rows.items() if k in prebuilt and r.id == prebuilt[k].msg_id]
    assert used and all(rows[k].pathway_key == first for k in used)
    assert all(rows[k].xml == prebuilt[k].xml for k in used)
    rebuilt = [k for k in prebuilt if rows[k].pathway_key != first]
    assert rebuilt and all(rows[k].id != prebuilt[k].msg_id and rows[k].id in rows[k].xml for k in rebuilt)


def _with(message: PrebuiltMessage, **changes) -> PrebuiltMessage:
    from dataclasses import replace

    return replace(message, **changes)


def test_a_configuration_error_stops_the_replay_before_any_worker_starts(sqlite_store, tmp_path, contracts_dir):
    """The workers wire messaging as the main process does; where that fails (here the XSD directory
    went away after the settings were read) the replay stops with the reason, before storing anything."""
    from dataclasses import replace

    from forlop.config import ConfigError

    path = tmp_path / "dips.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in generate("dips", 2, 61, as_of=AS_OF)))
    settings = replace(load_settings({}), xsd_dir=str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match="FORLOP_XSD_DIR"):
        replay_file(Runtime(settings, sqlite_store, FixedClock(AS_OF)), "dips", path, progress=None, workers=1)
    with sqlite_store.read() as conn:
        assert conn.execute(select(schema.pathway_events)).all() == []
