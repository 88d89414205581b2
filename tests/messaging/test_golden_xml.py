"""Golden XML per trigger, with fixed MsgIds and clock; every produced message validates against the XSDs.

Regenerate after an intended change: FORLOP_UPDATE_GOLDEN=1 pytest tests/messaging/test_golden_xml.py
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree
from msgkit import NOW, id_factory, payload

from forlop.events import EventKind
from services.messaging import repository
from services.messaging.handler import handle_status_changed

GOLDEN = Path(__file__).parent / "golden"


def _all_rows(store, deps, examples):
    deps.id_factory = id_factory(7)
    evs = examples["dips"]["PPR-1810111"]
    patient = replace(evs[0].patient, receives_municipal_services=True)
    stay = [
        replace(evs[0], event_id=f"dips:stay-{k.value}", kind=k, registration_id=f"stay-{k.value}", code=None,
                patient=patient, occurred_at=evs[0].occurred_at + timedelta(days=30 + i), stay_id="S1")
        for i, k in enumerate((EventKind.ADMISSION_STARTED, EventKind.DISCHARGE_READY, EventKind.DISCHARGED))
    ]
    rows = []
    with store.transaction() as conn:
        for pathway in (evs, [*examples["dips"]["PPR-6175466"]]):
            handle_status_changed(conn, payload(pathway + (stay if pathway is evs else [])), NOW, deps)
            rows += repository.rows_for_pathway(conn, pathway[0].pathway_key)
    return [r for r in rows if r["xml"]]


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_golden_xml_per_trigger(store, deps, examples) -> None:
    rows = _all_rows(store, deps, examples)
    seen = set()
    for row in rows:
        name = f"{row['trigger']}-{row['role']}.xml"
        if name in seen:
            continue
        seen.add(name)
        path = GOLDEN / name
        if os.environ.get("FORLOP_UPDATE_GOLDEN") == "1":
            path.write_text(row["xml"], encoding="utf-8")
        assert row["xml"] == path.read_text(encoding="utf-8"), name
    assert {"decision-gp.xml", "decision-referrer.xml", "evaluation-municipality.xml", "end-municipality.xml",
            "admission-municipality.xml", "discharge-ready-municipality.xml", "discharged-municipality.xml"} <= seen


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_every_message_validates_against_the_official_schemas(store, deps, examples) -> None:
    for row in _all_rows(store, deps, examples):
        deps.schemas.validate(etree.fromstring(row["xml"].encode()))
