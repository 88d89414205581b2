"""From owed to acknowledged, rejected or failed: the relay, the directory transport and AppRecs."""

from __future__ import annotations

import json
from dataclasses import replace

from msgkit import NOW, payload
from sqlalchemy import select

from forlop.storage import schema
from forlop_devtools.simulated_receiver import SimulatedReceiver
from services.messaging.adapters import repository
from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.handlers import handle_apprec, handle_status_changed
from services.messaging.relay import Relay


def _setup(store, deps, examples, tmp_path, pathway="PPR-4745328"):
    events = examples["dips"][pathway]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in")
    return events, transport, Relay(store, transport, deps)


def _rows(store, events):
    with store.read() as conn:
        return repository.rows_for_pathway(conn, events[0].pathway_key)


def _alerts(store):
    with store.read() as conn:
        rows = conn.execute(select(schema.outbox).where(schema.outbox.c.topic == "pathway.alerts")).all()
    return [json.loads(r.value) for r in rows]


def test_sent_then_acknowledged_through_the_directory_pair(store, deps, examples, tmp_path) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    assert relay.run_once() == 1
    (row,) = _rows(store, events)
    assert row["status"] == "sent" and row["attempts"] == 1
    assert (tmp_path / "out" / f"{row['id']}.xml").read_bytes().decode() == row["xml"]
    receiver = SimulatedReceiver("ok")
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    assert relay.poll_receipts() == 1
    (row,) = _rows(store, events)
    assert row["status"] == "acknowledged"
    assert list((tmp_path / "in" / "processed").iterdir())


def test_rejected_apprec_raises_an_alert(store, deps, examples, tmp_path) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    relay.run_once()
    receiver = SimulatedReceiver("reject:E21")
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    relay.poll_receipts()
    (row,) = _rows(store, events)
    assert row["status"] == "rejected" and "E21" in row["status_reason"]
    (alert,) = _alerts(store)
    assert alert["type"] == "message-rejected" and alert["messageId"] == row["id"]
    assert alert["errors"][0]["code"] == "E21"


def test_ok_with_errors_is_acknowledged_with_the_errors_kept(store, deps, examples, tmp_path) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    relay.run_once()
    (row,) = _rows(store, events)
    raw = build_apprec(row["id"], "DIALOG_HELSEFAGLIG", "ok-with-errors", NOW, "r1", [("E35", "Feil i delmelding")])
    another = build_apprec(row["id"], "DIALOG_HELSEFAGLIG", "ok", NOW, "r2")
    with store.transaction() as conn:
        handle_apprec(conn, raw, NOW, deps)
        handle_apprec(conn, raw, NOW, deps)  # the same receipt again: stored once
        handle_apprec(conn, another, NOW, deps)  # a second receipt for a settled message changes nothing
        receipts = repository.receipts_for(conn, row["id"])
    (row,) = _rows(store, events)
    assert row["status"] == "acknowledged" and "E35" in row["status_reason"]
    assert [r["outcome"] for r in receipts] == ["applied", "already-settled"]


def test_no_apprec_means_resend_with_the_same_msgid_then_failed(store, deps, examples, tmp_path, clock) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    receiver = SimulatedReceiver("silent")
    relay.run_once()
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    assert relay.run_once() == 0  # not yet timed out
    for _ in range(deps.max_attempts - 1):
        clock.advance(seconds=deps.apprec_timeout_s * 2 ** 4 + 1)
        assert relay.run_once() == 1
        receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    (row,) = _rows(store, events)
    assert row["status"] == "sent" and row["attempts"] == deps.max_attempts
    assert receiver.deliveries == {row["id"]: deps.max_attempts} and len(receiver.effects) == 1
    clock.advance(seconds=deps.apprec_timeout_s * 2 ** 4 + 1)
    relay.run_once()
    (row,) = _rows(store, events)
    assert row["status"] == "failed"
    assert [a["type"] for a in _alerts(store)] == ["message-failed"]


def test_backoff_doubles(store, deps, examples, tmp_path, clock) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    relay.run_once()
    (first,) = _rows(store, events)
    clock.advance(seconds=deps.apprec_timeout_s + 1)
    relay.run_once()
    (second,) = _rows(store, events)
    gap1 = first["next_attempt_at"] - first["sent_at"]
    gap2 = second["next_attempt_at"] - second["sent_at"]
    assert gap2 == 2 * gap1


def test_unknown_and_malicious_apprecs_are_recorded_harmlessly(store, deps, tmp_path) -> None:
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE AppRec [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<AppRec xmlns="http://www.kith.no/xmlstds/apprec/2004-11-21"><Status V="1"/>'
        b"<OriginalMsgId><Id>&x;</Id></OriginalMsgId></AppRec>"
    )
    laughs = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode() for i in range(1, 10)
    ) + b"]><AppRec>&lol9;</AppRec>"
    unknown = build_apprec("00000000-0000-4000-8000-00000000abcd", "DIALOG_HELSEFAGLIG", "ok", NOW, "r9")
    for raw in (xxe, laughs, b"<not-closed", b"\x00\xff garbage", unknown):
        with store.transaction() as conn:
            handle_apprec(conn, raw, NOW, deps)
    with store.read() as conn:
        rows = conn.execute(select(schema.receipts).order_by(schema.receipts.c.id)).all()
    assert [r.outcome for r in rows] == ["invalid"] * 4 + ["unknown-message"]
    assert all("root:" not in r.raw for r in rows)  # /etc/passwd never read


def test_withdrawal_after_sending_owes_a_correction(store, deps, examples, tmp_path) -> None:
    events, transport, relay = _setup(store, deps, examples, tmp_path)
    relay.run_once()
    (original,) = _rows(store, events)
    decision = next(e for e in events if e.code and e.code[3:4] == "C")
    withdrawal = replace(
        decision, event_id=decision.event_id + ":w", kind="registration-withdrawn", withdraws=decision.registration_id,
        registration_id=None, code=None, recorded_at=decision.recorded_at,
    )
    from forlop.events import EventKind

    withdrawal = replace(withdrawal, kind=EventKind.REGISTRATION_WITHDRAWN)
    for _ in range(2):  # redelivered: still one correction
        with store.transaction() as conn:
            handle_status_changed(conn, payload([*events, withdrawal]), NOW, deps)
    rows = {r["trigger"]: r for r in _rows(store, events)}
    assert set(rows) == {"decision", "correction"}
    corr = rows["correction"]
    assert corr["corrects"] == original["id"] and corr["recipient_her_id"] == original["recipient_her_id"]
    assert corr["status"] == "queued" and "KORRIGERING" in corr["xml"] and original["id"] in corr["xml"]


def test_withdrawal_before_sending_cancels(store, deps, examples, tmp_path) -> None:
    from forlop.events import EventKind

    events = examples["dips"]["PPR-4745328"]
    decision = next(e for e in events if e.code and e.code[3:4] == "C")
    withdrawal = replace(decision, event_id=decision.event_id + ":w", kind=EventKind.REGISTRATION_WITHDRAWN,
                         withdraws=decision.registration_id, registration_id=None, code=None)
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
        handle_status_changed(conn, payload([*events, withdrawal]), NOW, deps)
    (row,) = _rows(store, events)
    assert row["status"] == "suppressed" and row["status_reason"] == "withdrawn before sending"
