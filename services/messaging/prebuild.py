"""Messages built ahead of their transaction: a replay's worker process builds the XML of the
messages a pathway's history owes while the main process writes the chunk before.

A prebuilt message is used only for the row it was built for: the same dedupe key, the same
details, a new row queued at the same `now` (`prebuilt_builder`). Anything else (a row already
stored, another recipient) is built in the transaction as always; the prebuilt one is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from forlop.events import PathwayEvent
from forlop.status import PathwayStatus
from services.messaging.apply import BuildNew, build_for
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.domain.owed import owed_messages
from services.messaging.domain.plan import target_status
from services.messaging.render import details_of


@dataclass(frozen=True, slots=True)
class PrebuiltMessage:
    msg_id: str
    details: dict[str, Any]
    gen_date: datetime
    status: str  # what `build_for` gave: queued with XML, held or failed
    reason: str | None
    xml: str | None


def prebuild_messages(
    events: Sequence[PathwayEvent], status: PathwayStatus | None, now: datetime, deps: MessagingDeps
) -> dict[str, PrebuiltMessage]:
    """The XML of every message the history owes that would be queued as a new row, by dedupe key."""
    out: dict[str, PrebuiltMessage] = {}
    for owed in owed_messages(events, status, deps.municipal, deps.gps, deps.triggers):
        if target_status(owed)[0] is not MessageStatus.QUEUED:
            continue
        row = {"id": deps.id_factory(), "trigger": owed.trigger.value, "role": owed.role.value,
               "details": details_of(owed)}
        built, reason, xml = build_for(row, deps, now)
        out[owed.dedupe_key] = PrebuiltMessage(row["id"], row["details"], now, built, reason, xml)
    return out


def prebuilt_builder(prebuilt: Mapping[str, PrebuiltMessage]) -> BuildNew:
    """`apply_changes`'s `build_new` that takes a new row's prebuilt message, with its id, where it
    was built for that row, and builds the others in the transaction."""

    def build(row: dict[str, Any], deps: MessagingDeps, now: datetime) -> tuple[str, str | None, str | None]:
        ready = prebuilt.get(row["dedupe_key"])
        if ready is not None and ready.gen_date == now and ready.details == row["details"]:
            row["id"] = ready.msg_id
            return ready.status, ready.reason, ready.xml
        return build_for(row, deps, now)

    return build
