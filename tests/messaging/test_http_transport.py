"""The HTTP transport against a real server on 127.0.0.1: the simulated receiver's HTTP mode, and one that fails.

A 2xx body holding an AppRec settles the message in the same pass; 202 without a body leaves it
`sent` awaiting its AppRec; 3xx/5xx/refused leave it due for a retry with backoff, same MsgId.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, timedelta

from msgkit import NOW, LocalHttpServer, payload
from sqlalchemy import select

from forlop.storage import schema
from services.messaging.adapters import repository
from services.messaging.adapters.transport import HttpTransport
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay


def _queue(store, deps, examples, pathway="PPR-1810111"):
    events = examples["dips"][pathway]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    return events


def _rows(store, events):
    with store.read() as conn:
        return {r["id"]: r for r in repository.rows_for_pathway(conn, events[0].pathway_key)}


def _alerts(store):
    with store.read() as conn:
        rows = conn.execute(select(schema.outbox).where(schema.outbox.c.topic == "pathway.alerts")).all()
    return [json.loads(r.value) for r in rows]


def _utc(at):
    """SQLite hands datetimes back naive (in UTC), PostgreSQL aware: compare them as naive UTC."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


def _relay(store, deps, url):
    deps.transport_name = "http"
    return Relay(store, HttpTransport(url, timeout=5), deps)


def test_ok_apprec_in_the_response_body_acknowledges(store, deps, examples, http_receiver) -> None:
    events = _queue(store, deps, examples)
    receiver = http_receiver("ok")
    assert _relay(store, deps, receiver.url).run_once() == 5
    rows = _rows(store, events)
    assert {r["status"] for r in rows.values()} == {"acknowledged"}
    assert set(receiver.effects) == set(rows) and receiver.duplicates == 0
    with store.read() as conn:
        for msg_id in rows:
            (receipt,) = repository.receipts_for(conn, msg_id)
            assert receipt["status"] == "ok" and receipt["outcome"] == "applied"
    # What arrived is byte for byte what is stored, and the MsgId travels in the envelope.
    for msg_id, row in rows.items():
        assert f"<MsgId>{msg_id}</MsgId>" in row["xml"]


def test_rejected_apprec_in_the_response_body(store, deps, examples, http_receiver) -> None:
    events = _queue(store, deps, examples, "PPR-4745328")
    receiver = http_receiver("reject:E21")
    assert _relay(store, deps, receiver.url).run_once() == 1
    (row,) = _rows(store, events).values()
    assert row["status"] == "rejected" and "E21" in row["status_reason"]
    (alert,) = _alerts(store)
    assert alert["type"] == "message-rejected" and alert["messageId"] == row["id"]


def test_no_answer_is_resent_with_the_same_msgid_after_the_timeout(store, deps, examples, http_receiver, clock) -> None:
    events = _queue(store, deps, examples, "PPR-4745328")
    receiver = http_receiver("silent")  # 202, empty body
    relay = _relay(store, deps, receiver.url)
    assert relay.run_once() == 1
    (row,) = _rows(store, events).values()
    assert row["status"] == "sent" and row["attempts"] == 1
    assert _utc(row["next_attempt_at"]) == _utc(NOW + timedelta(seconds=deps.apprec_timeout_s))
    assert relay.run_once() == 0  # not timed out yet
    clock.advance(seconds=deps.apprec_timeout_s + 1)
    assert relay.run_once() == 1
    (again,) = _rows(store, events).values()
    assert again["id"] == row["id"] and again["attempts"] == 2 and again["status"] == "sent"
    assert receiver.deliveries == {row["id"]: 2} and len(receiver.effects) == 1


class Flaky:
    """Answers `status` (503, 302 ...) until told to pass requests to the simulated receiver."""

    def __init__(self, receiver, status: int) -> None:
        self.receiver, self.status = receiver, status
        self.server = LocalHttpServer(self.answer)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.status != 200:
            return self.status, "text/plain", b"try later"
        apprec = self.receiver.receive(body)
        return (200 if apprec else 202), "application/xml", apprec or b""


def test_5xx_and_redirect_leave_the_message_for_retry_with_backoff(store, deps, examples, clock) -> None:
    from forlop_devtools.simulated_receiver import SimulatedReceiver

    events = _queue(store, deps, examples, "PPR-4745328")
    receiver = SimulatedReceiver("ok")
    flaky = Flaky(receiver, 503)
    try:
        relay = _relay(store, deps, f"{flaky.server.base}/messages")
        assert relay.run_once() == 0
        (row,) = _rows(store, events).values()
        assert row["status"] == "queued" and row["attempts"] == 1 and "503" in row["status_reason"]
        assert _utc(row["next_attempt_at"]) - _utc(NOW) == timedelta(seconds=60)
        assert relay.run_once() == 0 and len(flaky.server.requests) == 1  # not due: no request made
        clock.advance(seconds=61)
        flaky.status = 302  # a redirect is not a hand-over either (urllib would re-send it as a GET)
        relay.run_once()
        (row2,) = _rows(store, events).values()
        assert row2["status"] == "queued" and row2["attempts"] == 2 and "302" in row2["status_reason"]
        assert _utc(row2["next_attempt_at"]) - _utc(clock()) == timedelta(seconds=120)  # doubled
        assert [m for m, _p, _b in flaky.server.requests] == ["POST", "POST"]
        clock.advance(seconds=121)
        flaky.status = 200
        assert relay.run_once() == 1
        (done,) = _rows(store, events).values()
        assert done["id"] == row["id"] and done["status"] == "acknowledged" and done["attempts"] == 3
        assert receiver.deliveries == {row["id"]: 1}
        # Every try carried the same document: same MsgId, byte-identical XML.
        assert {b for _m, _p, b in flaky.server.requests} == {row["xml"].encode()}
    finally:
        flaky.server.stop()


def test_connection_refused_is_retried_then_delivered(store, deps, examples, http_receiver, clock) -> None:
    events = _queue(store, deps, examples, "PPR-4745328")
    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = _relay(store, deps, f"http://127.0.0.1:{port}/messages")
    assert relay.run_once() == 0
    (row,) = _rows(store, events).values()
    assert row["status"] == "queued" and row["attempts"] == 1 and "refused" in row["status_reason"].lower()
    receiver = http_receiver("ok", port)  # the gateway comes up
    clock.advance(seconds=61)
    assert relay.run_once() == 1
    (done,) = _rows(store, events).values()
    assert done["id"] == row["id"] and done["status"] == "acknowledged"
    assert receiver.deliveries == {row["id"]: 1}


def test_gives_up_after_max_attempts_of_transport_errors(store, deps, examples, clock) -> None:
    events = _queue(store, deps, examples, "PPR-4745328")
    down = LocalHttpServer(lambda m, p, b: (500, "text/plain", b"boom"))
    try:
        relay = _relay(store, deps, f"{down.base}/messages")
        for _ in range(deps.max_attempts):
            relay.run_once()
            clock.advance(days=1)
        relay.run_once()
    finally:
        down.stop()
    (row,) = _rows(store, events).values()
    assert row["status"] == "failed" and len(down.requests) == deps.max_attempts
    assert [a["type"] for a in _alerts(store)] == ["message-failed"]
