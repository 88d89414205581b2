"""A pathway's current history: what the EHR says happened, independent of arrival order.

Duplicates collapse on the event id. A registration may be approved more than once
(a correction) and withdrawn (feilregistrering); for each registration the version
recorded last wins, and a withdrawal recorded last makes it as if it never happened,
even when the withdrawal arrived before what it withdraws.

An inpatient stay (admission, discharge-ready, discharged) is withdrawn as a whole: a
withdrawal naming the stay's id withdraws each of its events recorded before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from forlop.codes import code_list
from forlop.events import EventKind, PathwayEvent


@dataclass(frozen=True)
class CurrentHistory:
    events: tuple[PathwayEvent, ...]  # in force, in the order they happened
    withdrawn: tuple[PathwayEvent, ...]  # registrations withdrawn (the cancelled versions)
    withdrawals: tuple[PathwayEvent, ...]  # the withdrawal events themselves
    unmatched_withdrawals: tuple[PathwayEvent, ...]  # withdrawals whose target is not (yet) known


def history_hash(event_ids: Iterable[str]) -> str:
    """What a pathway's status was derived from: the set of its events' ids (order and duplicates aside).
    Stored beside the status; the same history gives the same hash, whatever order it arrived in."""
    return hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()


def happened_order(ev: PathwayEvent) -> tuple:
    """The order things happened in; registrations of the same moment in pathway order (the code list's)."""
    code = ev.code if ev.kind is EventKind.PATHWAY_CODE else None
    return (ev.occurred_at, code_list().same_day_rank(code, ev.pathway_type), ev.recorded_at, ev.event_id)


def current_history(events: Iterable[PathwayEvent]) -> CurrentHistory:
    unique = {ev.event_id: ev for ev in events}
    by_registration: dict[str, list[PathwayEvent]] = {}
    stays: dict[str, list[PathwayEvent]] = {}
    free: list[PathwayEvent] = []
    withdrawals: list[PathwayEvent] = []
    for ev in unique.values():
        if ev.kind is EventKind.REGISTRATION_WITHDRAWN:
            withdrawals.append(ev)
            if ev.withdraws:
                by_registration.setdefault(ev.withdraws, []).append(ev)
        elif ev.registration_id:
            by_registration.setdefault(ev.registration_id, []).append(ev)
        elif ev.stay_id:
            stays.setdefault(ev.stay_id, []).append(ev)
        else:
            free.append(ev)

    in_force: list[PathwayEvent] = list(free)
    withdrawn: list[PathwayEvent] = []
    unmatched: list[PathwayEvent] = []
    for target, versions in by_registration.items():
        # a withdrawal recorded in the same instant as its target comes after it (eSP keeps minutes only)
        versions.sort(key=lambda ev: (ev.recorded_at, ev.kind is EventKind.REGISTRATION_WITHDRAWN,
                                      ev.event_id))
        last = versions[-1]
        approvals = [ev for ev in versions if ev.kind is not EventKind.REGISTRATION_WITHDRAWN]
        if not approvals and target in stays:  # the withdrawal of a stay
            for ev in stays.pop(target):
                (withdrawn if ev.recorded_at <= last.recorded_at else in_force).append(ev)
        elif last.kind is EventKind.REGISTRATION_WITHDRAWN:
            if approvals:
                withdrawn.append(approvals[-1])
            else:
                unmatched.append(last)
        else:
            in_force.append(last)
    for stay in stays.values():
        in_force.extend(stay)
    in_force.sort(key=happened_order)
    return CurrentHistory(
        tuple(in_force),
        tuple(sorted(withdrawn, key=happened_order)),
        tuple(sorted(withdrawals, key=happened_order)),
        tuple(sorted(unmatched, key=happened_order)),
    )

