"""The message-trigger rules as data (profiles/messaging/triggers.json): what they say, how versions
apply, and that a broken rules file is refused with its reason."""

from __future__ import annotations

import copy
import json
from datetime import date
from importlib import resources

import pytest

from services.messaging.domain.model import Role, Trigger
from services.messaging.domain.triggers import Gate, TriggerBook, trigger_book


def _doc() -> dict:
    return json.loads(resources.files("profiles").joinpath("messaging/triggers.json").read_text("utf-8"))


def test_the_shipped_rules_are_domain_section_5() -> None:
    rules = {r.trigger: r for r in trigger_book().for_day(date(2026, 1, 1)).rules}
    said = {t: [(r.role, r.gate, r.outcomes, r.treatment_plan_changed) for r in rule.recipients]
            for t, rule in rules.items()}
    assert said[Trigger.DECISION] == [(Role.GP, Gate.NONE, None, None), (Role.REFERRER, Gate.NONE, None, None),
                                      (Role.MUNICIPALITY, Gate.CONSENT, frozenset("KA"), None)]
    assert said[Trigger.EVALUATION] == [(Role.GP, Gate.NONE, None, True), (Role.REFERRER, Gate.NONE, None, True),
                                        (Role.MUNICIPALITY, Gate.CONSENT, None, None)]
    assert said[Trigger.END] == [(Role.GP, Gate.NONE, None, None), (Role.REFERRER, Gate.NONE, None, None),
                                 (Role.MUNICIPALITY, Gate.CONSENT, None, None)]
    for stay in (Trigger.ADMISSION, Trigger.DISCHARGE_READY, Trigger.DISCHARGED):
        assert said[stay] == [(Role.MUNICIPALITY, Gate.MUNICIPAL_SERVICES, None, None)]
    assert {t: r.message_type for t, r in rules.items()} == {
        Trigger.DECISION: "DIALOG_HELSEFAGLIG", Trigger.EVALUATION: "DIALOG_HELSEFAGLIG",
        Trigger.END: "DIALOG_HELSEFAGLIG", Trigger.ADMISSION: "LOG_INNLAGT",
        Trigger.DISCHARGE_READY: "LOG_UTSKRIVNINGSKLAR", Trigger.DISCHARGED: "LOG_UTSKREVET"}
    assert trigger_book().never_gated_by(Gate.CONSENT) >= {(t, Role.MUNICIPALITY) for t in (
        Trigger.ADMISSION, Trigger.DISCHARGE_READY, Trigger.DISCHARGED)}


def test_the_version_in_force_on_the_day_of_the_trigger_applies() -> None:
    doc = _doc()
    doc["versions"].append({"version": "2027", "effectiveFrom": "2027-01-01", "triggers": {
        "evaluation": {"recipients": [{"role": "municipality", "gate": "consent"}]}}})
    book = TriggerBook.from_document(doc)
    assert book.for_day(date(2018, 6, 1)).version == "2019"  # before any version: the oldest
    assert book.for_day(date(2026, 12, 31)).version == "2019"
    later = {r.trigger: r for r in book.for_day(date(2027, 1, 1)).rules}
    assert [r.role for r in later[Trigger.EVALUATION].recipients] == [Role.MUNICIPALITY]
    assert later[Trigger.EVALUATION].message_type == "DIALOG_HELSEFAGLIG"  # the rest of the trigger is the base's
    # no version gates the evaluation's GP message by consent; both gate the municipality's
    assert (Trigger.EVALUATION, Role.MUNICIPALITY) not in book.never_gated_by(Gate.CONSENT)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d["base"]["triggers"]["decision"]["recipients"][2]["when"].update(sameDay=True), "unknown conditions"),
    (lambda d: d["base"]["triggers"]["decision"]["on"].update(event="verdict"), "not an event of the code list"),
    (lambda d: d["base"]["triggers"]["admission"]["on"].update(event="start"), "names its event"),
    (lambda d: d["versions"][0].update(triggers={"admission": {"messageType": "LOG_AVMELDING"}}), "not versioned"),
    (lambda d: d["gates"].pop("municipalServices"), "gates must describe"),
])
def test_a_broken_rules_file_is_refused_with_its_reason(change, reason) -> None:
    doc = copy.deepcopy(_doc())
    change(doc)
    with pytest.raises(ValueError, match=reason):
        TriggerBook.from_document(doc)
