"""Consent gates the municipality; an unresolved recipient holds a message until the register is fixed."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import yaml
from msgkit import NOW, payload

from forlop.events import EventKind
from services.messaging.adapters import repository
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay


def _muni(store, key):
    with store.read() as conn:
        return {r["trigger"]: r for r in repository.rows_for_pathway(conn, key) if r["role"] == "municipality"}


def test_backdated_consent_releases_the_suppressed_message(store, deps, examples) -> None:
    events = examples["dips"]["PPR-6175466"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    assert _muni(store, events[0].pathway_key)["decision"]["status"] == "suppressed"
    decision = next(e for e in events if e.code and e.code.endswith("CK"))
    consent = next(e for e in events if e.kind is EventKind.CONSENT_CHANGED)
    late = replace(consent, event_id="dips:late-consent", registration_id="late-consent",
                   occurred_at=decision.occurred_at - timedelta(days=2), recorded_at=NOW)
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, late]), NOW, deps)
    muni = _muni(store, events[0].pathway_key)
    assert muni["decision"]["status"] == "queued" and muni["decision"]["xml"]
    assert len(muni) == 2


def test_unresolved_municipality_is_held_then_released(store, deps, examples, directory_file, tmp_path) -> None:
    events = examples["dips"]["PPR-1810111"]
    data = yaml.safe_load(directory_file.read_text())
    entry = data["municipalities"].pop("5001")
    directory_file.write_text(yaml.safe_dump(data))
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    held = _muni(store, events[0].pathway_key)["evaluation"]
    assert held["status"] == "held" and "5001" in held["status_reason"]
    relay = Relay(store, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps)
    relay.run_once()
    assert _muni(store, events[0].pathway_key)["evaluation"]["status"] == "held"
    data["municipalities"]["5001"] = entry
    directory_file.write_text(yaml.safe_dump(data))
    relay.run_once()  # the relay pass re-resolves, releases and sends it
    row = _muni(store, events[0].pathway_key)["evaluation"]
    assert row["status"] == "sent" and row["recipient_her_id"] == entry["herId"] and row["id"] == held["id"]


def test_plo_messages_for_inpatient_stays(store, deps, examples) -> None:
    events = examples["dips"]["PPR-1810111"]
    base = events[0]
    patient = replace(base.patient, receives_municipal_services=True)
    stay = [
        replace(base, event_id=f"dips:stay-{kind.value}", kind=kind, registration_id=f"stay-{kind.value}", code=None,
                patient=patient, occurred_at=base.occurred_at + timedelta(days=10 + i), stay_id="S1")
        for i, kind in enumerate((EventKind.ADMISSION_STARTED, EventKind.DISCHARGE_READY, EventKind.DISCHARGED))
    ]
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, *stay]), NOW, deps)
    muni = _muni(store, base.pathway_key)
    for trigger, mtype in (("admission", "LOG_INNLAGT"), ("discharge-ready", "LOG_UTSKRIVNINGSKLAR"),
                           ("discharged", "LOG_UTSKREVET")):
        assert muni[trigger]["status"] == "queued" and muni[trigger]["message_type"] == mtype
        assert "Pasientlogistikk" in muni[trigger]["xml"]
