"""Inpatient stays (issue #25): the PLO logistics messages follow municipal services, not consent.

Every scenario goes through both vendors' formats (records written as the EHR would, parsed by
`parse_vendor_event`) and the messaging handler, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from lxml import etree
from msgkit import NOW, VendorRecords, local, parse, payload, raw_examples

from services.messaging.adapters import repository
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.adapters.xml_build import PLO
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay

PHV = {"dips": "PPR-1810111", "esp": "eSP-6029255"}  # outpatient PHV, consent given at the start
TSB = {"dips": "PPR-4745328", "esp": "eSP-6738744"}  # TSB inpatient, no consent
LOGISTICS = {"admission": "LOG_INNLAGT", "discharge-ready": "LOG_UTSKRIVNINGSKLAR", "discharged": "LOG_UTSKREVET"}
SOURCES = pytest.mark.parametrize("source", ["dips", "esp"])


def _is_consent(source: str, raw: dict) -> bool:
    return raw.get("eventType") == "consent.changed" if source == "dips" else raw.get("meldingstype") == "SAMTYKKE"


def _pathway(contracts_dir, source: str, ids: dict[str, str], *, consent: bool = True) -> tuple[list, VendorRecords]:
    raws = raw_examples(contracts_dir, source)[ids[source]]
    if not consent:
        raws = [r for r in raws if not _is_consent(source, r)]
    return raws, VendorRecords(source, raws[0])


def _stay(rec: VendorRecords, stay_id: str, admitted: str, ready: str, discharged: str, **kw) -> list[dict]:
    destination = kw.pop("destination", None)
    return [rec.stay("admission", stay_id, local(admitted), **kw),
            rec.stay("discharge-ready", stay_id, local(ready), **kw),
            rec.stay("discharged", stay_id, local(discharged), destination=destination, **kw)]


def _handle(store, deps, source: str, raws: list[dict]) -> list[dict]:
    events = parse(source, raws)
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
        return repository.rows_for_pathway(conn, events[0].pathway_key)


def _logistics(rows: list[dict]) -> dict[str, dict]:
    found = {}
    for r in rows:
        if r["trigger"] in LOGISTICS:
            assert r["trigger"] not in found, f"two {r['trigger']} messages"
            found[r["trigger"]] = r
    return found


def _assert_all_queued(deps, rows: list[dict]) -> None:
    logistics = _logistics(rows)
    assert set(logistics) == set(LOGISTICS)
    for trigger, row in logistics.items():
        assert (row["status"], row["role"], row["message_type"]) == ("queued", "municipality", LOGISTICS[trigger])
        deps.schemas.validate(etree.fromstring(row["xml"].encode()))


@SOURCES
def test_logistics_go_without_the_pathways_consent(store, deps, contracts_dir, source) -> None:
    """A PHV inpatient who receives municipal services and gave no pathway consent: all three go
    (the old rule sent 0 of 3); the coordinator's evaluation message still waits for consent."""
    raws, rec = _pathway(contracts_dir, source, PHV, consent=False)
    rows = _handle(store, deps, source, [*raws, *_stay(rec, "S-1", "2025-12-01 10:00", "2025-12-10 09:00",
                                                           "2025-12-12 12:00")])
    _assert_all_queued(deps, rows)
    (evaluation,) = [r for r in rows if (r["role"], r["trigger"]) == ("municipality", "evaluation")]
    assert (evaluation["status"], evaluation["status_reason"]) == ("suppressed", "no consent")


@SOURCES
def test_logistics_with_consent(store, deps, contracts_dir, source) -> None:
    raws, rec = _pathway(contracts_dir, source, PHV)
    rows = _handle(store, deps, source, [*raws, *_stay(rec, "S-1", "2025-12-01 10:00", "2025-12-10 09:00",
                                                           "2025-12-12 12:00")])
    _assert_all_queued(deps, rows)
    (evaluation,) = [r for r in rows if (r["role"], r["trigger"]) == ("municipality", "evaluation")]
    assert evaluation["status"] == "queued"


@SOURCES
def test_consent_revoked_before_admission(store, deps, contracts_dir, source) -> None:
    """A TSB inpatient whose consent was revoked before the admission still gets all three notices."""
    raws, rec = _pathway(contracts_dir, source, TSB)
    consent = [rec.consent(local("2025-11-03 16:00"), True), rec.consent(local("2025-11-05 08:00"), False)]
    stay = _stay(rec, "S-2", "2025-11-05 10:00", "2025-11-20 09:00", "2025-11-21 12:00")
    rows = _handle(store, deps, source, [*raws, *consent, *stay])
    _assert_all_queued(deps, rows)
    assert not [r for r in rows if r["role"] == "municipality" and r["trigger"] not in LOGISTICS]


@SOURCES
def test_no_municipal_services_nothing_goes(store, deps, contracts_dir, source) -> None:
    """Without municipal services no logistics message is owed, consent or not: no row at all."""
    raws, rec = _pathway(contracts_dir, source, PHV)
    rows = _handle(store, deps, source, [*raws, *_stay(rec, "S-1", "2025-12-01 10:00", "2025-12-10 09:00",
                                                           "2025-12-12 12:00", services=False)])
    assert _logistics(rows) == {}


@SOURCES
def test_a_revoked_or_later_consent_changes_nothing_sent(store, deps, contracts_dir, source, tmp_path) -> None:
    """Logistics messages sent; then a consent revocation dated before the stay, then consent again:
    they stay sent, unmarked, uncorrected (the consent's alert and mark are for consent-gated messages)."""
    raws, rec = _pathway(contracts_dir, source, PHV)
    stay = _stay(rec, "S-1", "2025-12-01 10:00", "2025-12-10 09:00", "2025-12-12 12:00")
    _handle(store, deps, source, [*raws, *stay])
    Relay(store, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps).run_once()
    revoked = rec.consent(local("2025-11-30 08:00"), False)
    later = rec.consent(local("2026-01-10 08:00"), True)
    for extra in ([revoked], [revoked, later]):
        rows = _handle(store, deps, source, [*raws, *stay, *extra])
        logistics = _logistics(rows)
        assert {r["status"] for r in logistics.values()} == {"sent"}
        assert not any("sentWithoutConsentInForce" in (r["details"] or {}) for r in logistics.values())
        assert not [r for r in rows if r["trigger"] == "correction"]


@SOURCES
def test_withdrawn_stay_is_cancelled_once(store, deps, contracts_dir, source, tmp_path) -> None:
    """Withdrawing the stay (its id named by the vendor's deletion) after the notices went: each is
    cancelled once, with a PLO cancellation of the same type that refers to it; delivered again, nothing new."""
    raws, rec = _pathway(contracts_dir, source, PHV, consent=False)
    stay = _stay(rec, "S-9", "2025-12-01 10:00", "2025-12-10 09:00", "2025-12-12 12:00")
    _handle(store, deps, source, [*raws, *stay])
    Relay(store, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps).run_once()
    withdrawal = rec.withdrawal("S-9", local("2025-12-20 09:00"))
    for _ in range(2):
        rows = _handle(store, deps, source, [*raws, *stay, withdrawal])
    sent = _logistics(rows)
    corrections = {r["corrects"]: r for r in rows if r["trigger"] == "correction"}
    assert set(corrections) == {r["id"] for r in sent.values()}
    for original in sent.values():
        c = corrections[original["id"]]
        assert (c["status"], c["role"], c["message_type"]) == ("queued", "municipality", original["message_type"])
        root = etree.fromstring(c["xml"].encode())
        deps.schemas.validate(root)
        assert root.find(f".//{{{PLO}}}Pasientlogistikk") is not None
        assert "Kansellering" in c["xml"] and original["id"] in c["xml"]


@SOURCES
def test_stay_withdrawn_before_sending_goes_nowhere(store, deps, contracts_dir, source) -> None:
    raws, rec = _pathway(contracts_dir, source, PHV, consent=False)
    stay = _stay(rec, "S-9", "2025-12-01 10:00", "2025-12-10 09:00", "2025-12-12 12:00")
    _handle(store, deps, source, [*raws, *stay])
    rows = _handle(store, deps, source, [*raws, *stay, rec.withdrawal("S-9", local("2025-12-20 09:00"))])
    assert {(r["status"], r["status_reason"]) for r in _logistics(rows).values()} == {
        ("suppressed", "withdrawn before sending")}
    assert not [r for r in rows if r["trigger"] == "correction"]
