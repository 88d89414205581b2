"""Consent registered later as not in force at the trigger (see the decision in `domain/plan.py`).

Unsent: back to suppressed. Already sent: kept, no correction (a consent change is not a withdrawn
registration, and a correction would disclose again); marked `sentWithoutConsentInForce`, alerted once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from msgkit import NOW, payload
from prometheus_client import REGISTRY
from sqlalchemy import select

from forlop.events import EventKind
from forlop.storage import schema
from services.messaging.adapters import repository
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay
from services.messaging.views import message_view


def _late_withdrawal(events):
    consent = next(e for e in events if e.kind is EventKind.CONSENT_CHANGED)
    evaluation = next(e for e in events if e.code and e.code.endswith("E"))
    return replace(consent, event_id="dips:late-no-consent", registration_id="late-no-consent",
                   consent_municipality=False, occurred_at=evaluation.occurred_at - timedelta(days=3),
                   recorded_at=NOW)


def _muni(store, key):
    with store.read() as conn:
        return [r for r in repository.rows_for_pathway(conn, key) if r["role"] == "municipality"]


def _alerts(store, kind):
    with store.read() as conn:
        rows = conn.execute(select(schema.outbox).where(schema.outbox.c.topic == "pathway.alerts")).all()
    return [a for a in (json.loads(r.value) for r in rows) if a["type"] == kind]


def test_unsent_message_goes_back_to_suppressed(store, deps, examples) -> None:
    events = examples["dips"]["PPR-1810111"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
        handle_status_changed(conn, payload([*events, _late_withdrawal(events)]), NOW, deps)
    (row,) = _muni(store, events[0].pathway_key)
    assert row["status"] == "suppressed" and row["status_reason"] == "no consent"
    assert "sentWithoutConsentInForce" not in row["details"] and not _alerts(store, "message-sent-without-consent")


def test_sent_message_is_kept_and_marked_not_corrected(store, deps, examples, tmp_path) -> None:
    events = examples["dips"]["PPR-1810111"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(store, DirectoryTransport(tmp_path / "out", tmp_path / "in"), deps).run_once()
    (sent,) = _muni(store, events[0].pathway_key)
    assert sent["status"] == "sent"

    late = _late_withdrawal(events)
    flagged_before = REGISTRY.get_sample_value("forlop_message_sent_without_consent_total") or 0.0
    for _ in range(2):  # redelivered: marked and alerted once
        with store.transaction() as conn:
            handle_status_changed(conn, payload([*events, late]), NOW, deps)
    (row,) = _muni(store, events[0].pathway_key)  # no correction row
    assert row["id"] == sent["id"] and row["status"] == "sent" and row["xml"] == sent["xml"]
    assert row["details"]["sentWithoutConsentInForce"] is True
    assert message_view(row)["notes"] == ["sentWithoutConsentInForce"]
    (alert,) = _alerts(store, "message-sent-without-consent")
    assert alert["messageId"] == sent["id"] and alert["role"] == "municipality"
    assert REGISTRY.get_sample_value("forlop_message_sent_without_consent_total") - flagged_before == 1
    with store.read() as conn:
        assert not [r for r in repository.list_messages(conn) if r["trigger"] == "correction"]

    # The history changes again: the late registration is itself withdrawn, consent was in force after all.
    undo = replace(late, event_id="dips:undo", kind=EventKind.REGISTRATION_WITHDRAWN, withdraws=late.registration_id,
                   registration_id=None, consent_municipality=None)
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, late, undo]), NOW, deps)
    (row,) = _muni(store, events[0].pathway_key)
    assert row["status"] == "sent" and "sentWithoutConsentInForce" not in row["details"]
    assert message_view(row)["notes"] == [] and len(_alerts(store, "message-sent-without-consent")) == 1
