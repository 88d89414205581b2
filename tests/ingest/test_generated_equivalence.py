"""The same seed gives the same clinical history in both formats: both mappings must agree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from forlop.events import EventKind, PathwayEvent
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event


def test_generated_dips_and_esp_streams_normalise_to_the_same_events(
    same_fact: Callable[[PathwayEvent], PathwayEvent],
) -> None:
    as_of = datetime(2026, 3, 1, 12, tzinfo=ZoneInfo("Europe/Oslo"))
    dips = [parse_vendor_event("dips", r) for r in generate("dips", 300, 21, as_of=as_of)]
    esp = [parse_vendor_event("esp", r) for r in generate("esp", 300, 21, as_of=as_of)]
    assert len(dips) == len(esp) > 1500
    assert {e.kind for e in dips} == set(EventKind)
    for d, e in zip(dips, esp, strict=True):
        assert same_fact(d) == same_fact(e), (d.to_dict(), e.to_dict())
        assert d.event_id != e.event_id.replace("esp:", "dips:")
