"""Golden XML per trigger, with fixed MsgIds and clock; every produced message validates against the XSDs.

Regenerate after an intended change: FORLOP_UPDATE_GOLDEN=1 pytest tests/messaging/test_golden_xml.py
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree
from msgkit import NOW, VendorRecords, id_factory, local, parse, payload, raw_examples

from forlop.events import EventKind
from services.messaging.adapters import repository
from services.messaging.handlers import handle_status_changed

GOLDEN = Path(__file__).parent / "golden"


def _stays(contracts_dir) -> list:
    """Two stays of the PHV example pathway, as DIPS sends them: the first discharged to a place not
    stated, the second to a nursing home."""
    raws = raw_examples(contracts_dir, "dips")["PPR-1810111"]
    rec = VendorRecords("dips", raws[0])
    return parse("dips", [
        rec.stay("admission", "ADM-1", local("2025-12-01 10:05")),
        rec.stay("discharge-ready", "ADM-1", local("2025-12-10 09:00")),
        rec.stay("discharged", "ADM-1", local("2025-12-12 12:30")),
        rec.stay("admission", "ADM-2", local("2026-02-01 22:40")),
        rec.stay("discharge-ready", "ADM-2", local("2026-02-15 11:00")),
        rec.stay("discharged", "ADM-2", local("2026-02-16 10:00"), destination="nursing-home"),
    ])


def _name(row: dict) -> str:
    destination = (row["details"]["event"].get("discharge_destination") if row["trigger"] == "discharged" else None)
    return f"{row['trigger']}-{row['role']}{'-to-' + destination if destination else ''}.xml"


def _all_rows(store, deps, examples, contracts_dir):
    deps.id_factory = id_factory(7)
    evs = examples["dips"]["PPR-1810111"]
    stay = _stays(contracts_dir)
    rows = []
    with store.transaction() as conn:
        for pathway in (evs, [*examples["dips"]["PPR-6175466"]]):
            handle_status_changed(conn, payload(pathway + (stay if pathway is evs else [])), NOW, deps)
            rows += repository.rows_for_pathway(conn, pathway[0].pathway_key)
    return [r for r in rows if r["xml"]]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_golden_xml_per_trigger(store, deps, examples, contracts_dir) -> None:
    rows = _all_rows(store, deps, examples, contracts_dir)
    seen = set()
    for row in rows:
        name = _name(row)
        if name in seen:
            continue
        seen.add(name)
        path = GOLDEN / name
        if os.environ.get("FORLOP_UPDATE_GOLDEN") == "1":
            path.write_text(row["xml"], encoding="utf-8")
        assert row["xml"] == path.read_text(encoding="utf-8"), name
    assert {"decision-gp.xml", "decision-referrer.xml", "evaluation-municipality.xml", "end-municipality.xml",
            "admission-municipality.xml", "discharge-ready-municipality.xml", "discharged-municipality.xml",
            "discharged-municipality-to-nursing-home.xml"} <= seen


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_every_message_validates_against_the_official_schemas(store, deps, examples, contracts_dir) -> None:
    for row in _all_rows(store, deps, examples, contracts_dir):
        deps.schemas.validate(etree.fromstring(row["xml"].encode()))


def _golden(name: str, xml: str) -> None:
    path = GOLDEN / name
    if os.environ.get("FORLOP_UPDATE_GOLDEN") == "1":
        path.write_text(xml, encoding="utf-8")
    assert xml == path.read_text(encoding="utf-8"), name


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_golden_correction_after_sending(store, deps, examples, tmp_path) -> None:
    from services.messaging.adapters.transport import DirectoryTransport
    from services.messaging.relay import Relay

    deps.id_factory = id_factory(8)
    events = examples["dips"]["PPR-4745328"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(store, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps).run_once()
    decision = next(e for e in events if e.code and e.code[3:4] == "C")
    withdrawal = replace(decision, event_id=decision.event_id + ":w", kind=EventKind.REGISTRATION_WITHDRAWN,
                         withdraws=decision.registration_id, registration_id=None, code=None)
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, withdrawal]), NOW, deps)
        rows = {r["trigger"]: r for r in repository.rows_for_pathway(conn, events[0].pathway_key)}
    corr, original = rows["correction"], rows["decision"]
    assert corr["corrects"] == original["id"] and corr["role"] == original["role"] == "gp"
    root = etree.fromstring(corr["xml"].encode())
    deps.schemas.validate(root)
    mh = {"mh": "http://www.kith.no/xmlstds/msghead/2006-05-24"}
    assert root.xpath("string(mh:MsgInfo/mh:ConversationRef/mh:RefToParent)", namespaces=mh) == original["id"]
    _golden("correction-gp.xml", corr["xml"])


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_golden_dialogmelding_1_0_and_1_1_by_directory_preference(store, deps, examples) -> None:
    """Stavanger (1103) prefers Dialogmelding 1.0 in the register, Trondheim (5001) 1.1: same message, two forms."""
    from services.messaging.adapters.xml_build import DIALOG

    deps.id_factory = id_factory(9)
    base = examples["dips"]["PPR-1810111"]
    xml = {}
    for kommune, version in (("1103", "1.0"), ("5001", "1.1")):
        events = [replace(e, patient=replace(e.patient, municipality=kommune), pathway_id=f"{e.pathway_id}-{kommune}",
                          event_id=f"{e.event_id}-{kommune}", registration_id=f"{e.registration_id}-{kommune}")
                  for e in base]
        with store.transaction() as conn:
            handle_status_changed(conn, payload(events), NOW, deps)
            (row,) = [r for r in repository.rows_for_pathway(conn, events[0].pathway_key)
                      if r["role"] == "municipality"]
        root = etree.fromstring(row["xml"].encode())
        deps.schemas.validate(root)
        (body,) = root.iter(f"{{{DIALOG[version]}}}Dialogmelding")
        assert not list(root.iter(f"{{{DIALOG['1.1' if version == '1.0' else '1.0']}}}Dialogmelding"))
        xml[version] = row["xml"]
        _golden(f"evaluation-municipality-dialog-{version}.xml", row["xml"])
    # The body is validated strictly, not skipped: a 1.0 Notat without its (required) TemaKodet does not pass.
    broken = etree.fromstring(xml["1.0"].encode())
    tema = next(broken.iter(f"{{{DIALOG['1.0']}}}TemaKodet"))
    tema.getparent().remove(tema)
    from services.messaging.adapters.schemas import InvalidMessage

    with pytest.raises(InvalidMessage):
        deps.schemas.validate(broken)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_golden_plo_cancellation_of_a_withdrawn_stay(store, deps, examples, contracts_dir, tmp_path) -> None:
    from services.messaging.adapters.transport import DirectoryTransport
    from services.messaging.relay import Relay

    deps.id_factory = id_factory(10)
    events = [*examples["dips"]["PPR-1810111"], *_stays(contracts_dir)[:3]]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(store, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps).run_once()
    rec = VendorRecords("dips", raw_examples(contracts_dir, "dips")["PPR-1810111"][0])
    (withdrawal,) = parse("dips", [rec.withdrawal("ADM-1", local("2025-12-20 09:00"))])
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, withdrawal]), NOW, deps)
        rows = repository.rows_for_pathway(conn, events[0].pathway_key)
    by_id = {r["id"]: r for r in rows}
    corrections = [r for r in rows if r["trigger"] == "correction"]
    assert len(corrections) == 3
    for corr in corrections:
        original = by_id[corr["corrects"]]
        root = etree.fromstring(corr["xml"].encode())
        deps.schemas.validate(root)
        _golden(f"cancellation-{original['trigger']}-municipality.xml", corr["xml"])
