"""The status's JSON form: `to_dict` (written out for speed) equals the generic `plain`, key order
included, and `from_dict` reads it back to the same status, over generated pathways."""

from __future__ import annotations

import json

from hypothesis import given, settings
from test_history_properties import Generated, pathways

from forlop.events import plain
from forlop.status import PathwayStatus
from services.pathway.domain.derive import derive
from services.pathway.domain.living import advance
from services.pathway.domain.rules import RuleBook

RULES = RuleBook.load()


@settings(max_examples=200, deadline=None)
@given(pathways())
def test_to_dict_is_plain_and_from_dict_reads_it_back(g: Generated) -> None:
    status = derive(g.events, RULES, g.now)
    stored = status.to_dict()
    assert json.dumps(stored) == json.dumps(plain(status))
    read = PathwayStatus.from_dict(json.loads(json.dumps(stored)))
    assert json.dumps(read.to_dict()) == json.dumps(stored)
    assert read.milestones == status.milestones and read.findings == status.findings
    assert read.clock == status.clock and read.as_of == status.as_of
    moved = advance(read, g.now)  # the same clock: nothing moves
    assert moved is not None and json.dumps(moved.to_dict()) == json.dumps(stored)
