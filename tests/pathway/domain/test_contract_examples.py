"""The shared contract examples: both vendors' streams derive the expected milestones and episode status."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

from forlop.clock import parse_time
from forlop.events import PathwayEvent
from services.ingest.domain.normalise import parse_vendor_event
from services.pathway.domain.derive import derive
from services.pathway.domain.rules import RuleBook
from services.pathway.domain.status import PathwayStatus


def _examples(contracts_dir: Path, source: str) -> dict[str, list[PathwayEvent]]:
    by_pathway: dict[str, list[PathwayEvent]] = defaultdict(list)
    path = contracts_dir / f"{source}-examples.ndjson"
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            ev = parse_vendor_event(source, json.loads(line))
            by_pathway[ev.pathway_id].append(ev)
    return dict(by_pathway)


def _expected(contracts_dir: Path) -> dict[str, dict]:
    return json.loads((contracts_dir / "expected-status.json").read_text("utf-8"))


def _observed(status: PathwayStatus) -> list[dict]:
    return [
        {
            "code": m.code.value,
            "deadline": m.deadline.isoformat(),
            "adjusted": m.adjusted_deadline.isoformat(),
            "status": m.deadline_status.value,
        }
        for m in status.milestones
        if m.deadline is not None and m.adjusted_deadline is not None and m.deadline_status is not None
    ]


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_examples_give_the_expected_status(contracts_dir: Path, source: str) -> None:
    expected = {pid: e for pid, e in _expected(contracts_dir).items() if e["vendor"] == source}
    pathways = _examples(contracts_dir, source)
    assert set(pathways) == set(expected)
    for pid, events in pathways.items():
        want = expected[pid]
        status = derive(events, RuleBook.load(), parse_time(want["as_of"]))
        assert status.episode_status.value == want["episode"], pid
        assert _observed(status) == want["milestones"], pid
        assert status.findings == (), pid


@pytest.mark.parametrize("source", ["dips", "esp"])
def test_examples_in_any_order_and_redelivered_give_the_same_status(contracts_dir: Path, source: str) -> None:
    expected = _expected(contracts_dir)
    rng = random.Random(7)
    for pid, events in _examples(contracts_dir, source).items():
        now = parse_time(expected[pid]["as_of"])
        clean = derive(events, RuleBook.load(), now)
        for _ in range(5):
            messy = events + rng.sample(events, k=3)
            rng.shuffle(messy)
            assert derive(messy, RuleBook.load(), now) == clean, pid


def test_both_vendors_derive_the_same_status(contracts_dir: Path) -> None:
    expected = _expected(contracts_dir)
    by_scenario: dict[str, list[PathwayStatus]] = defaultdict(list)
    for source in ("dips", "esp"):
        for pid, events in _examples(contracts_dir, source).items():
            by_scenario[expected[pid]["scenario"]].append(
                derive(events, RuleBook.load(), parse_time(expected[pid]["as_of"]))
            )
    assert len(by_scenario) == 3
    for scenario, (dips, esp) in by_scenario.items():

        def neutral(s: PathwayStatus) -> dict:
            d = s.to_dict()
            for k in ("pathway_key", "pathway_id", "source"):
                d.pop(k)
            for m in d["milestones"]:
                m.pop("event_ids")
            if d["extra"]["clock"]["last_contact"]:
                d["extra"]["clock"]["last_contact"].pop("event_id")
            return d

        assert neutral(dips) == neutral(esp), scenario
