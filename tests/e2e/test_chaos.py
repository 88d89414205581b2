"""The short chaos run (kill -9): the services as their own processes, killed while they work, and the
outcome compared with a replay of the same files. The long run: `make chaos` (docs/reliability.md)."""

from __future__ import annotations

import pytest

from forlop_devtools.chaos import SERVICES, Chaos, ChaosConfig
from tests.conftest import POSTGRES_URL

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_kill_9_loses_nothing_and_duplicates_nothing(broker, tmp_path):
    config = ChaosConfig(workdir=tmp_path, pathways=25, kills=3, seed=7, postgres_url=POSTGRES_URL,
                         bootstrap=broker, feed_seconds=24)
    report = Chaos(config).run()
    print("\n".join(report.lines()))
    assert sum(report.kills.values()) == 3 and set(report.kills) <= set(SERVICES)
    assert report.restarts == 3 and not report.unexpected_exits
    assert report.events > 250 and report.events_lost == 0 and report.events_extra == 0
    assert report.pathways_live == report.pathways_replay == 50 and not report.pathways_differing
    assert report.msg_ids_received > 50
    assert (report.twice_in_effect, report.conflicting_contents, report.unknown_msg_ids) == (0, 0, 0)
    assert (report.uncorrected, report.received_but_unsent, report.owed_never_delivered) == (0, 0, 0)
    assert not report.unsettled and report.deadlocks == 0 and report.receipts_duplicated == 0
    assert report.dead_letters_live == report.dead_letters_replay == 0
