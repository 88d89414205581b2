"""The contracts' expected-status.json: how many messages each role gets for each trigger."""

from __future__ import annotations

import json
import random
from collections import Counter

from msgkit import NOW, payload

from services.messaging.adapters import repository
from services.messaging.handlers import handle_status_changed


def _counts(rows: list[dict]) -> dict[str, int]:
    return dict(Counter(f"{r['role']}:{r['trigger']}" for r in rows if r["status"] != "suppressed"))


def test_example_streams_owe_the_expected_messages(store, deps, examples, contracts_dir) -> None:
    expected = json.loads((contracts_dir / "expected-status.json").read_text())
    for by_pathway in examples.values():
        for pathway_id, events in by_pathway.items():
            with store.transaction() as conn:
                handle_status_changed(conn, payload(events), NOW, deps)
                rows = repository.rows_for_pathway(conn, events[0].pathway_key)
            assert _counts(rows) == expected[pathway_id]["messages"], pathway_id


def test_phbu_consent_after_decision_suppresses_the_decision_message_only(store, deps, examples) -> None:
    events = examples["dips"]["PPR-6175466"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
        rows = repository.rows_for_pathway(conn, events[0].pathway_key)
    muni = {r["trigger"]: r for r in rows if r["role"] == "municipality"}
    assert muni["decision"]["status"] == "suppressed" and muni["decision"]["status_reason"] == "no consent"
    assert muni["end"]["status"] == "queued"


def test_replay_in_any_order_and_redelivery_give_the_same_messages(store, deps, examples) -> None:
    events = examples["esp"]["eSP-6029255"]
    keys = set()
    for seed in range(4):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        # Arrival order: each prefix of the shuffled stream is delivered, then the whole one twice.
        for n in range(1, len(shuffled) + 1):
            with store.transaction() as conn:
                handle_status_changed(conn, payload(shuffled[:n]), NOW, deps)
        with store.transaction() as conn:
            handle_status_changed(conn, payload(shuffled), NOW, deps)
            rows = repository.rows_for_pathway(conn, events[0].pathway_key)
        current = {(r["dedupe_key"], r["status"]) for r in rows}
        keys.add(frozenset(current))
    assert len(keys) == 1
    assert len(next(iter(keys))) == 5


def test_a_batch_of_status_changes_equals_one_transaction_each(store, deps, examples) -> None:
    """Several changes of one pathway in one consumer batch (rows read once, inserts deferred) leave
    what one transaction per change leaves, for every example stream delivered prefix by prefix."""
    from sqlalchemy import delete

    from forlop.storage import schema
    from services.messaging.handlers import handle_status_changes

    def state(key: str) -> set:
        with store.read() as conn:
            return {(r["dedupe_key"], r["status"], r["status_reason"], r["corrects"] is not None)
                    for r in repository.rows_for_pathway(conn, key)}

    for by_pathway in examples.values():
        for events in by_pathway.values():
            key = events[0].pathway_key
            shuffled = list(events)
            random.Random(7).shuffle(shuffled)
            prefixes = [payload(shuffled[:n]) for n in range(1, len(shuffled) + 1)] + [payload(shuffled)]
            for p in prefixes:
                with store.transaction() as conn:
                    handle_status_changed(conn, p, NOW, deps)
            one_each = state(key)
            with store.transaction() as conn:
                conn.execute(delete(schema.messages).where(schema.messages.c.pathway_key == key))
                handle_status_changes(conn, prefixes, NOW, deps)
            assert state(key) == one_each, key
