"""A unit's Organizations depend on the events seen at it, never on their order or on which vendor spoke last."""

from __future__ import annotations

import itertools
from dataclasses import replace

from forlop.events import Unit
from forlop.fhir import ids
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.units import merged, merged_units, organizations, unit_facts, with_units
from tests.builders import RULES, at, pathway

TRUST = "983974899"


def _events():
    """Three pathways at one unit: DIPS sends the trust's organisation number, eSP does not, and one
    DIPS event (the latest) renames the unit."""
    dips = pathway("D11").start("2025-10-06").first_attendance("2025-10-20").events
    esp = pathway("D12").start("2025-10-08").first_attendance("2025-10-30").events
    unit = dips[0].unit
    dips = [replace(ev, unit=replace(ev.unit, org_number=TRUST)) for ev in dips]
    esp = [replace(ev, unit=Unit(unit.her_id, "DPS poliklinikk (eSP)", unit.setting), pathway_id=f"e{ev.pathway_id}")
           for ev in esp]
    late = pathway("D11").start("2025-11-02").events
    late = [replace(ev, unit=replace(unit, name="DPS Test poliklinikk, ny", org_number=TRUST), pathway_id="late")
            for ev in late]
    return unit.her_id, [dips, esp, late]


def test_the_facts_are_the_latest_event_s_whatever_the_order():
    her_id, pathways = _events()
    every = [ev for events in pathways for ev in events]
    expected = unit_facts(every)[her_id]
    assert (expected.name, expected.org_number) == ("DPS Test poliklinikk, ny", TRUST)
    for order in itertools.permutations(pathways):
        views = [unit_facts(events) for events in order]
        assert merged_units(*views)[her_id] == expected
        assert unit_facts(ev for events in order for ev in reversed(events))[her_id] == expected
    a, b = unit_facts(pathways[0])[her_id], unit_facts(pathways[1])[her_id]
    assert merged(a, b) == merged(b, a) and merged(a, a) == a


def test_the_trust_is_its_own_organization_and_each_unit_is_part_of_it():
    her_id, pathways = _events()
    facts = unit_facts(ev for events in pathways for ev in events)[her_id]
    unit, trust = organizations(facts, {TRUST: "Helse Test HF"})
    assert unit["identifier"] == [{"system": ids.SID_HER_ID, "value": her_id}]  # no organisation number
    assert unit["partOf"] == {"reference": f"Organization/{trust['id']}"}
    assert trust == {"resourceType": "Organization", "id": ids.trust_id(TRUST),
                     "identifier": [{"system": ids.SID_ORG_NUMBER, "value": TRUST}], "active": True,
                     "name": "Helse Test HF"}
    assert "name" not in organizations(facts, {})[1]  # a trust forlop does not know by name: its number only


def test_every_pathway_at_the_unit_gets_the_same_organizations():
    her_id, pathways = _events()
    units = merged_units(*(unit_facts(events) for events in pathways))
    seen = []
    for events in pathways:
        own = map_pathway(pathway_status(events), events)
        orgs = [r for r in with_units(own, units, {}) if r["resourceType"] == "Organization"]
        seen.append(orgs)
        rebuilt = with_units(own, units, {})
        assert [r for r in rebuilt if r["resourceType"] != "Organization"] == [
            r for r in own if r["resourceType"] != "Organization"]  # the rest as it was
        first = [r["resourceType"] for r in own].index("Organization")
        assert rebuilt[first : first + 2] == orgs  # where the mapping put the unit's
    assert seen[0] == seen[1] == seen[2] and len(seen[0]) == 2
    # the eSP pathway alone knew no trust: with what the others saw, its unit is part of it
    esp_alone = [r for r in map_pathway(pathway_status(pathways[1]), pathways[1]) if r["resourceType"] == "Organization"]
    assert len(esp_alone) == 1 and "partOf" not in esp_alone[0]


def pathway_status(events):
    return derive(events, RULES, at("2025-12-01"))
