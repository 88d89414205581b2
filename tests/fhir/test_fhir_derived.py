"""Derived, not hand-built: synthetic pathways from both vendors map to conformant resources."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from forlop.events import PathwayEvent
from forlop.fhir.conformance import check_conformance
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.rules import RuleBook

AS_OF = datetime(2026, 6, 1, 12, tzinfo=ZoneInfo("Europe/Oslo"))


@pytest.mark.parametrize("vendor", ["dips", "esp"])
def test_synthetic_pathways_conform(vendor: str) -> None:
    histories: dict[str, dict[str, PathwayEvent]] = defaultdict(dict)
    for raw in generate(vendor, 80, seed=11, as_of=AS_OF):
        ev = parse_vendor_event(vendor, raw)
        histories[ev.pathway_key][ev.event_id] = ev
    rules = RuleBook.load()
    seen_status: set[str] = set()
    for key, by_id in sorted(histories.items()):
        events = list(by_id.values())
        status = derive(events, rules, AS_OF)
        resources = map_pathway(status, events)
        assert resources == map_pathway(status, list(reversed(events)))
        seen_status.add(status.episode_status.value)
        for res in resources:
            if res["resourceType"] in ("EpisodeOfCare", "Task"):
                assert check_conformance(res) == [], (key, res["id"])
    assert {"waitlist", "active", "finished"} <= seen_status
