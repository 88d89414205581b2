"""Messaging reads pathway codes through the platform's code list: a corrected code list (a change
to profiles/codes/event-codes.json, data only) reaches what messaging owes and the order it reads a
history in, with no change to messaging's code."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import replace

import pytest

from forlop import codes
from forlop.history import happened_order
from services.messaging.domain.owed import owed_messages
from services.messaging.domain.triggers import trigger_book


@pytest.fixture
def corrected(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shipped code list with the clinical decision's event letter corrected from C to D."""
    doc = copy.deepcopy(codes.code_list_document())
    doc["events"]["D"] = doc["events"].pop("C")
    monkeypatch.setattr(codes, "code_list_document", lambda: doc)
    codes.code_list.cache_clear()
    trigger_book.cache_clear()
    yield
    monkeypatch.undo()
    codes.code_list.cache_clear()
    trigger_book.cache_clear()


def _recoded(events, old: str, new: str):
    return [replace(ev, code=ev.code.replace(old, new)) if ev.code and ev.code[3:4] == old else ev for ev in events]


def _decisions(events, deps) -> list[str]:
    return sorted(m.role.value for m in owed_messages(events, None, deps.municipal, deps.gps)
                  if m.trigger.value == "decision")


def test_the_shipped_code_list_owes_decision_messages_for_letter_c(examples, deps) -> None:
    events = examples["dips"]["PPR-6175466"]
    assert _decisions(events, deps) == ["gp", "gp", "municipality"]  # two decisions (basic, extended)
    assert _decisions(_recoded(events, "C", "D"), deps) == []


def test_a_corrected_code_list_reaches_messaging(examples, deps, corrected) -> None:
    events = examples["dips"]["PPR-6175466"]
    assert _decisions(_recoded(events, "C", "D"), deps) == ["gp", "gp", "municipality"]
    assert _decisions(events, deps) == []  # C is no longer the decision's letter


def test_the_same_day_order_follows_the_code_list(examples, corrected) -> None:
    decision = next(ev for ev in _recoded(examples["dips"]["PPR-6175466"], "C", "D") if (ev.code or "")[3:4] == "D")
    assert happened_order(decision)[1] == codes.code_list().events["D"]["sameDayRank"] == 3


def test_a_code_list_without_same_day_ranks_is_refused() -> None:
    doc = copy.deepcopy(codes.code_list_document())
    del doc["events"]["F"]["sameDayRank"]
    with pytest.raises(ValueError, match="'F'"):
        codes.CodeList.from_document(doc)
