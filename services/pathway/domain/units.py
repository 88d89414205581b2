"""The treating units and their health trusts as FHIR Organizations: the same whichever vendor spoke last.

A unit is known by its HER-id. What is known about it is gathered over every event of every pathway
at it, from any vendor (the union of what was seen): its name and the organisation number of the
trust it belongs to (DIPS sends it, eSP does not). Each fact is the one of the latest event that
carries it, by (occurred_at, recorded_at, event_id), so the result depends on which events were seen,
never on the order they were processed in or on which pathway was derived last. `merged` combines
two such views (a stored one and a batch's); it is commutative and idempotent.

The trust is an Organization of its own, identified by its organisation number; each unit carries
only its HER-id and is `partOf` its trust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from forlop.events import PathwayEvent
from forlop.fhir import ids

Resource = dict[str, Any]


@dataclass(frozen=True, slots=True)
class UnitFacts:
    """What is known of one unit; each fact with the ordering key of the event it came from."""

    her_id: str
    name: str
    name_key: str
    org_number: str | None = None
    org_number_key: str | None = None


def event_key(ev: PathwayEvent) -> str:
    """(occurred_at, recorded_at, event_id) as text that sorts the same way (UTC, fixed width)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%f"
    return f"{ev.occurred_at.astimezone(UTC).strftime(fmt)}|{ev.recorded_at.astimezone(UTC).strftime(fmt)}|{ev.event_id}"


def unit_facts(events: Iterable[PathwayEvent]) -> dict[str, UnitFacts]:
    """Every unit the events name, by HER-id, with the latest name and organisation number seen."""
    out: dict[str, UnitFacts] = {}
    for ev in events:
        key = event_key(ev)
        seen = UnitFacts(ev.unit.her_id, ev.unit.name, key, ev.unit.org_number or None,
                         key if ev.unit.org_number else None)
        out[ev.unit.her_id] = merged(out.get(ev.unit.her_id), seen)
    return out


def merged(a: UnitFacts | None, b: UnitFacts | None) -> UnitFacts:
    """Both views of one unit as one: each fact from the later event."""
    if a is None or b is None:
        found = a or b
        assert found is not None
        return found
    name, name_key = max((a.name_key, a.name), (b.name_key, b.name))[::-1]
    numbers = [(f.org_number_key, f.org_number) for f in (a, b) if f.org_number_key is not None]
    org_key, org_number = max(numbers) if numbers else (None, None)
    return UnitFacts(a.her_id, name, name_key, org_number, org_key)


def merged_units(*views: Mapping[str, UnitFacts]) -> dict[str, UnitFacts]:
    out: dict[str, UnitFacts] = {}
    for view in views:
        for her_id, facts in view.items():
            out[her_id] = merged(out.get(her_id), facts)
    return out


def unit_organization(facts: UnitFacts) -> Resource:
    res: Resource = {
        "resourceType": "Organization",
        "id": ids.organization_id(facts.her_id),
        "identifier": [{"system": ids.SID_HER_ID, "value": facts.her_id}],
        "active": True,
        "name": facts.name,
    }
    if facts.org_number:
        res["partOf"] = {"reference": f"Organization/{ids.trust_id(facts.org_number)}"}
    return res


def trust_organization(org_number: str, trust_names: Mapping[str, str]) -> Resource:
    """The health trust (helseforetak) by its organisation number; named when forlop knows its name
    (the trust it sends for, FORLOP_SENDER_*): the events carry only the number."""
    res: Resource = {
        "resourceType": "Organization",
        "id": ids.trust_id(org_number),
        "identifier": [{"system": ids.SID_ORG_NUMBER, "value": org_number}],
        "active": True,
    }
    if org_number in trust_names:
        res["name"] = trust_names[org_number]
    return res


def organizations(facts: UnitFacts, trust_names: Mapping[str, str]) -> list[Resource]:
    """The unit's Organization, then its trust's (when its organisation number is known)."""
    out = [unit_organization(facts)]
    if facts.org_number:
        out.append(trust_organization(facts.org_number, trust_names))
    return out


def with_units(resources: Sequence[Resource], units: Mapping[str, UnitFacts],
               trust_names: Mapping[str, str]) -> list[Resource]:
    """A pathway's resources with its Organizations rebuilt from `units` (what every pathway at the
    unit saw), in the place the mapping put them; the other resources as they are."""
    out: list[Resource] = []
    placed = False
    for res in resources:
        if res["resourceType"] != "Organization":
            out.append(res)
            continue
        if placed:
            continue
        placed = True
        her_ids = [i["value"] for r in resources if r["resourceType"] == "Organization"
                   for i in r.get("identifier", []) if i["system"] == ids.SID_HER_ID]
        for her_id in her_ids:
            out += organizations(units[her_id], trust_names)
    return out
