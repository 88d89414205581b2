"""`forlop status`: one pathway's timeline, as a coordinator reads it."""

from __future__ import annotations

from datetime import datetime
from typing import TextIO

from sqlalchemy import or_, select

from app.bootstrap import Runtime
from forlop.storage import schema
from services.pathway.public import derive, load_history


def find_pathway_key(runtime: Runtime, pathway: str) -> str | None:
    p = schema.pathways
    with runtime.store.read() as conn:
        return conn.execute(
            select(p.c.pathway_key).where(or_(p.c.pathway_key == pathway, p.c.pathway_id == pathway))
        ).scalar()


def print_timeline(runtime: Runtime, pathway: str, as_of: datetime, out: TextIO) -> int:
    key = find_pathway_key(runtime, pathway)
    if key is None:
        print(f"no pathway {pathway!r}", file=out)
        return 1
    with runtime.store.read() as conn:
        history = load_history(conn, [key])[key]
    status = derive(history, runtime.pathway_deps.rules, as_of)
    by_id = {ev.event_id: ev for ev in history}
    out.write(
        f"{status.pathway_id} ({status.source}) {status.pathway_type}  episode: {status.episode_status.value}"
        f"  phase: {status.phase}  rules: {status.rule_set}  as of {as_of.isoformat(timespec='minutes')}\n"
    )
    out.write(f"{'milestone':<20} {'state':<10} {'anchor':<11} {'deadline':<11} {'adjusted':<11} "
              f"{'done':<11} {'status':<13} cause\n")
    for m in status.milestones:
        out.write(
            f"{m.key:<20} {m.state.value:<10} {_d(m.anchor_date):<11} {_d(m.deadline):<11} "
            f"{_d(m.adjusted_deadline):<11} {_d(m.completed_on):<11} "
            f"{(m.deadline_status.value if m.deadline_status else '-'):<13} "
            f"{m.delay_cause.value if m.delay_cause else ''}\n"
        )
        for eid in m.event_ids:
            ev = by_id.get(eid)
            if ev:
                out.write(f"{'':<22}<- {ev.occurred_on} {ev.kind.value} {ev.code or ''} "
                          f"(recorded {ev.recorded_at.date()}, {ev.event_id})\n")
    for period in status.status_history:
        out.write(f"episode {period.status.value:<17} {period.start} .. {period.end or ''}\n")
    for f in status.findings:
        out.write(f"quality: {f.kind}: {f.message}\n")
    return 0


def _d(value: object) -> str:
    return value.isoformat() if value is not None else "-"  # type: ignore[attr-defined]
