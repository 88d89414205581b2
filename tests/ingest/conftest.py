"""Fixtures for the ingest tests: the contracts' example streams and the DIPS/eSP comparison."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from forlop.events import PathwayEvent


@pytest.fixture(scope="session")
def example_records(contracts_dir: Path) -> dict[str, list[dict]]:
    """The vendor example streams in tests/fixtures/contracts, per source."""
    folder = contracts_dir
    return {
        source: [json.loads(line) for line in (folder / f"{source}-examples.ndjson").read_text("utf-8").splitlines()]
        for source in ("dips", "esp")
    }


def clinical_fact(event: PathwayEvent) -> PathwayEvent:
    """The event minus what legitimately differs between vendors for the same fact.

    Ids (of event, pathway, registration, appointment, stay), where it came from
    (source, source_system, the DIPS-only org number) and what only one vendor knows
    (eSP: who keyed it in; DIPS: the author's and the referrer's HPR number).
    """
    return replace(
        event,
        event_id="",
        source="",  # type: ignore[arg-type]
        source_system=None,
        recorded_by=None,
        pathway_id="",
        registration_id=None,
        withdraws=None,
        stay_id=None,
        author_hpr=None,
        unit=replace(event.unit, org_number=None),
        referrer=replace(event.referrer, hpr=None) if event.referrer else None,
        appointment=replace(event.appointment, id="") if event.appointment else None,
    )


@pytest.fixture(scope="session")
def same_fact() -> Callable[[PathwayEvent], PathwayEvent]:
    return clinical_fact
