"""The search index holds exactly the rows `search_index.index_values` gives for each stored resource.

`upsert_many` works out the rows a stored resource has from its JSON (there is no index of the
table by resource to read them from), so every path that writes resources must leave the index
equal to a rebuild from the resources: events one pathway at a time and in batches, late and
redelivered ones, the scanner's retimed Tasks, withdrawn registrations whose Task goes away, a
patient whose national id is corrected (the EpisodeOfCare moves to another Patient).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select

from forlop.config import load_settings
from forlop.storage import Store, schema
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.pathway.domain import search_index
from services.pathway.domain.rules import RuleBook
from services.pathway.handlers import PathwayDeps, handle_events, scan
from tests.builders import at, pathway

AS_OF = at("2026-03-01")
DEPS = PathwayDeps(RuleBook.load(), load_settings({}).topics)


def _index(store: Store) -> set[tuple[str, str, str, str]]:
    with store.read() as conn:
        return {tuple(row) for row in conn.execute(select(schema.fhir_search_index))}


def _rebuilt(store: Store) -> set[tuple[str, str, str, str]]:
    with store.read() as conn:
        resources = list(conn.execute(select(schema.fhir_resources.c.resource)).scalars())
    patients = {f"Patient/{r['id']}": r for r in resources if r["resourceType"] == "Patient"}
    return {(r["resourceType"], r["id"], p, v[:300]) for r in resources for p, v in search_index.index_values(r, patients)}


def test_generated_pathways_in_batches_then_scanned(store: Store) -> None:
    events = [parse_vendor_event(vendor, r) for vendor, seed in (("dips", 3), ("esp", 4))
              for r in generate(vendor, 20, seed, as_of=AS_OF)]
    for i in range(0, len(events), 17):  # batches that cut pathways apart
        with store.transaction() as conn:
            handle_events(conn, events[i : i + 17], AS_OF, DEPS)
    handled = _index(store)
    assert handled == _rebuilt(store)
    for days in (1, 10, 40, 120):  # Tasks retimed (business-status), some pathways derived again
        with store.transaction() as conn:
            scan(conn, AS_OF + timedelta(days=days), DEPS)
        assert _index(store) == _rebuilt(store)
    assert _index(store) != handled  # the passes changed indexed values


def test_a_withdrawn_milestone_takes_its_task_rows_and_a_corrected_patient_moves_the_episode(store: Store) -> None:
    p = pathway("D11", pathway_id="PPR-IDX-1").start("2025-01-06").first_attendance("2025-01-20")
    p.decision("2025-02-10", "K")
    with store.transaction() as conn:
        handle_events(conn, p.events, at("2025-02-11"), DEPS)
    extended = {row for row in _index(store) if row[0] == "Task" and row[2] == "code" and row[3] == "decision-extended"}
    assert len(extended) == 1 and _index(store) == _rebuilt(store)
    p.withdraw()  # the decision: no extended assessment owed, its Task goes
    with store.transaction() as conn:
        handle_events(conn, p.events, at("2025-02-12"), DEPS)
    task_id = next(iter(extended))[1]
    assert not any(row[1] == task_id for row in _index(store))
    assert _index(store) == _rebuilt(store)

    # The national id corrected (a D-nummer replaced, say): the episode and Tasks move to another Patient.
    p.evaluation("2025-02-20")
    corrected = replace(p.events[-1], patient=replace(p.events[-1].patient, national_id="13837033319"))
    with store.transaction() as conn:
        handle_events(conn, [corrected], at("2025-02-21"), DEPS)
    index = _index(store)
    assert index == _rebuilt(store)
    assert ("EpisodeOfCare", "patient.identifier", "13837033319") in {row[:1] + row[2:] for row in index}
    assert ("EpisodeOfCare", "patient.identifier", "12838428558") not in {row[:1] + row[2:] for row in index}
