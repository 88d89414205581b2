"""Messaging state under concurrency: every move is decided on the row as it is under lock.

- A plan made from an older read (the relay sent the row meanwhile) never rewrites a message that
  has left as unsent: its withdrawal is corrected.
- Locks are taken in one order: two release passes over the same held messages never deadlock.
- A redelivered older status change does not bring back a message that later history suppressed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from msgkit import NOW, payload
from sqlalchemy import select, text

from app.bootstrap import pathway_deps_from
from forlop.config import load_settings
from forlop.events import EventKind
from forlop.storage import Store, schema
from services.messaging.adapters import repository
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.apply import apply_changes, release_held
from services.messaging.domain.model import MunicipalEntry, Recipient
from services.messaging.domain.owed import owed_messages, withdrawn_registrations
from services.messaging.domain.plan import reconcile
from services.messaging.handlers import Inbound, handle_batch, handle_status_changed
from services.messaging.relay import Relay
from services.pathway.public import SqlUnitOfWork, handle_events
from tests.conftest import _postgres_store


def _withdrawal_of_the_decision(events):
    decision = next(e for e in events if e.code and e.code[3:4] == "C")
    return replace(decision, event_id=decision.event_id + ":w", kind=EventKind.REGISTRATION_WITHDRAWN,
                   withdraws=decision.registration_id, registration_id=None, code=None)


def _rows(store, key):
    with store.read() as conn:
        return repository.rows_for_pathway(conn, key)


def test_a_plan_from_an_older_read_corrects_a_message_the_relay_sent_meanwhile(store, deps, examples, tmp_path):
    """The chaos run's finding, step by step: the handler planned from an unlocked read, the relay sent
    the row, then the plan was applied: the sent decision became "withdrawn before sending"."""
    events = examples["dips"]["PPR-4745328"]
    key = events[0].pathway_key
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    later = [*events, _withdrawal_of_the_decision(events)]
    with store.read() as conn:  # the plan: from a read, before the relay's send
        planned = reconcile(owed_messages(later, None, deps.municipal, deps.gps),
                            repository.rows_for_pathway(conn, key), withdrawn_registrations(later))
    assert len(planned) == 1  # cancel the unsent decision message

    assert Relay(store, DirectoryTransport(tmp_path / "out", tmp_path / "in"), deps).run_once() == 1
    (sent,) = _rows(store, key)
    assert sent["status"] == "sent" and sent["trigger"] == "decision"

    with store.transaction() as conn:  # the stale plan applied
        inserts: list[dict] = []
        apply_changes(conn, planned, key, events[0].pathway_id, NOW, deps, inserts)
        repository.insert_messages(conn, inserts)
    rows = {r["trigger"]: r for r in _rows(store, key)}
    assert rows["decision"]["status"] == "sent" and rows["decision"]["status_reason"] is None
    correction = rows["correction"]
    assert correction["corrects"] == sent["id"] and correction["recipient_her_id"] == sent["recipient_her_id"]
    assert correction["status"] == "queued"

    with store.transaction() as conn:  # the withdrawal redelivered through the handler: still one correction
        handle_status_changed(conn, payload(later), NOW, deps)
    assert sorted(r["trigger"] for r in _rows(store, key)) == ["correction", "decision"]


def _backend_pid(conn) -> int:
    return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _wait_for_lock_wait(store: Store, pid: int, timeout: float = 30.0) -> None:
    """Poll until the backend `pid` waits for a lock (not a wall-clock deadline of the domain)."""
    deadline = time.monotonic() + timeout
    with store.read() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                                   {"pid": pid}).scalar()
            if waiting == "Lock":
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for a lock")


class _Thread(threading.Thread):
    """A thread that keeps its exception for the test to raise."""

    def __init__(self, target) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def result(self) -> None:
        self.join(60)
        assert not self.is_alive(), "thread still running"
        if self.error is not None:
            raise self.error


class _HeldSend(DirectoryTransport):
    """A directory transport whose send waits (while the relay holds the row) until released."""

    def __init__(self, *args, **kw) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kw)
        self.sending = threading.Event()
        self.go = threading.Event()

    def send(self, msg_id: str, xml: bytes) -> bytes | None:
        self.sending.set()
        assert self.go.wait(30)
        return super().send(msg_id, xml)


@pytest.fixture
def pg_store() -> Iterator[Store]:
    """PostgreSQL only: SQLite runs one writer at a time, so these interleavings cannot happen there."""
    yield from _postgres_store()


@pytest.mark.postgres
def test_a_withdrawal_during_the_send_waits_for_it_and_corrects(pg_store, deps, examples, tmp_path):
    """The same race with real threads and connections on PostgreSQL: the relay holds the row while it
    sends; the handler's reconciliation waits for it and then sees a message that has left."""
    store = pg_store
    events = examples["dips"]["PPR-4745328"]
    key = events[0].pathway_key
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    transport = _HeldSend(tmp_path / "out", tmp_path / "in")
    relay = _Thread(Relay(store, transport, deps).run_once)
    relay.start()
    assert transport.sending.wait(30)
    pids: queue.Queue[int] = queue.Queue()

    def withdraw() -> None:
        with store.transaction() as conn:
            pids.put(_backend_pid(conn))
            handle_status_changed(conn, payload([*events, _withdrawal_of_the_decision(events)]), NOW, deps)

    handler = _Thread(withdraw)
    handler.start()
    _wait_for_lock_wait(store, pids.get(timeout=30))
    transport.go.set()
    relay.result()
    handler.result()
    rows = {r["trigger"]: r for r in _rows(store, key)}
    assert rows["decision"]["status"] == "sent"
    assert rows["correction"]["corrects"] == rows["decision"]["id"]


class _GatedRegister:
    """The municipal register; the first lookup waits until the test lets it answer."""

    def __init__(self) -> None:
        self.entry = MunicipalEntry("5001", Recipient(her_id="9975011", name="Forløpskoordinator",
                                                      org_her_id="9975010", org_name="Trondheim kommune"))
        self.entered = threading.Event()
        self.go = threading.Event()
        self._first = True
        self._lock = threading.Lock()

    def municipality(self, kommunenummer: str) -> MunicipalEntry | None:
        with self._lock:
            first, self._first = self._first, False
        if first:
            self.entered.set()
            assert self.go.wait(30)
        return self.entry

    def gp_for(self, national_id: str) -> Recipient | None:
        return None


class _NoMunicipalities:
    def municipality(self, kommunenummer: str) -> MunicipalEntry | None:
        return None


@pytest.mark.postgres
def test_two_release_passes_over_the_same_held_messages_do_not_deadlock(pg_store, deps, examples):
    """The chaos run's PostgreSQL deadlock: two `release_held` paths locked the same held messages one by
    one in different orders. Now each locks its rows at once, in id order: the second waits, then finds
    them released."""
    store = pg_store
    gps = deps.gps
    deps.municipal = _NoMunicipalities()
    with store.transaction() as conn:
        for pathway in ("PPR-1810111", "PPR-6175466"):
            handle_status_changed(conn, payload(examples["dips"][pathway]), NOW, deps)
        held = sorted(repository.held_ids(conn, 100))
    assert len(held) >= 2
    first, last = held[0], held[-1]
    register = _GatedRegister()
    deps.municipal, deps.gps = register, gps
    released: list[int] = []

    def release(ids: list[str], pids: queue.Queue[int] | None = None) -> None:
        with store.transaction() as conn:
            if pids is not None:
                pids.put(_backend_pid(conn))
            released.append(release_held(conn, NOW, deps, ids))

    one = _Thread(lambda: release([first, last]))
    one.start()
    assert register.entered.wait(30)  # the first pass holds `first` and waits in the register lookup
    pids: queue.Queue[int] = queue.Queue()
    other = _Thread(lambda: release([last, first], pids))  # the other pass, in the other order
    other.start()
    _wait_for_lock_wait(store, pids.get(timeout=30))
    register.go.set()
    one.result()
    other.result()  # old code: DeadlockDetected in one of them
    assert sum(released) == 2
    with store.read() as conn:
        assert {r["status"] for r in repository.lock_messages(conn, [first, last])} == {"queued"}


# --- an older status change redelivered after a newer one --------------------------------------------


def _late_consent_withdrawal(events):
    consent = next(e for e in events if e.kind is EventKind.CONSENT_CHANGED)
    evaluation = next(e for e in events if e.code and e.code.endswith("E"))
    return replace(consent, event_id="dips:late-no-consent", registration_id="late-no-consent",
                   consent_municipality=False, occurred_at=evaluation.occurred_at - timedelta(days=3),
                   recorded_at=NOW)


def _status_changes(store, tmp_path, batches) -> list[bytes]:
    """The pathway service's own status-changed records for each batch of events, in order."""
    pathway_deps = pathway_deps_from(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}))
    o = schema.outbox
    for events in batches:
        with store.transaction() as conn:
            handle_events(SqlUnitOfWork(conn), events, NOW, pathway_deps)
    with store.read() as conn:
        return [row.value.encode() for row in conn.execute(
            select(o.c.value).where(o.c.topic == pathway_deps.topics.status_changed).order_by(o.c.id))]


def _municipal(store, key):
    (row,) = [r for r in _rows(store, key) if r["role"] == "municipality"]
    return row


@pytest.mark.parametrize("carries_version", [True, False], ids=["history_version", "older-producer"])
def test_an_older_status_change_redelivered_does_not_bring_back_a_suppressed_message(
    store, deps, examples, tmp_path, carries_version
):
    """v1: consent in force, the municipal message is queued. v2: consent registered later as not in
    force at the evaluation: back to suppressed. v1 again (a redelivery): skipped, still suppressed."""
    import orjson

    events = examples["dips"]["PPR-1810111"]
    key = events[0].pathway_key
    v1, v2 = _status_changes(store, tmp_path, [events, [_late_consent_withdrawal(events)]])
    if not carries_version:  # a pathway service of before the field: the messaging side counts the events
        v1, v2 = (orjson.dumps({k: v for k, v in orjson.loads(r).items() if k != "history_version"}) for r in (v1, v2))
    else:
        assert orjson.loads(v1)["history_version"] == len(events) == orjson.loads(v2)["history_version"] - 1

    def deliver(*records: bytes) -> None:
        with store.transaction() as conn:
            handle_batch(conn, [Inbound(payload=orjson.loads(r)) for r in records], NOW, deps)

    deliver(v1)
    assert _municipal(store, key)["status"] == "queued"
    deliver(v2)
    assert (_municipal(store, key)["status"], _municipal(store, key)["status_reason"]) == ("suppressed", "no consent")
    deliver(v1)  # alone, in a later batch
    deliver(v2, v1)  # both again, the older last, in one batch
    row = _municipal(store, key)
    assert (row["status"], row["status_reason"]) == ("suppressed", "no consent")
    with store.read() as conn:
        assert conn.execute(select(schema.messaging_pathways.c.history_version)
                            .where(schema.messaging_pathways.c.pathway_key == key)).scalar_one() == len(events) + 1
