"""SQL for the `messages` and `receipts` tables, and alerts through the outbox. SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update

from forlop.storage import schema

m, r = schema.messages, schema.receipts


def _dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def rows_for_pathway(conn: Connection, pathway_key: str) -> list[dict[str, Any]]:
    return [_dict(x) for x in conn.execute(select(m).where(m.c.pathway_key == pathway_key))]


def rows_for_pathways(conn: Connection, pathway_keys: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in pathway_keys}
    keys = sorted(pathway_keys)
    for i in range(0, len(keys), 500):
        for x in conn.execute(select(m).where(m.c.pathway_key.in_(keys[i : i + 500]))):
            out[x.pathway_key].append(_dict(x))
    return out


def held_ids_for_pathway(conn: Connection, pathway_key: str) -> list[str]:
    return list(conn.execute(select(m.c.id).where(m.c.pathway_key == pathway_key, m.c.status == "held")).scalars())


def get(conn: Connection, msg_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    q = select(m).where(m.c.id == msg_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = conn.execute(q).first()
    return _dict(row) if row else None


# Values go as parameters of one cached statement, not `.values(...)`: building and cache-keying a new
# statement per message was ~15 % of a replay; several messages go as one executemany.
def insert_messages(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(m), rows)


def update_message(conn: Connection, msg_id: str, **values: Any) -> None:
    conn.execute(update(m).where(m.c.id == bindparam("k_id")), {"k_id": msg_id, **values})


def list_messages(
    conn: Connection, status: str | None = None, pathway: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    q = select(m).order_by(m.c.created_at, m.c.id).limit(limit)
    if status:
        q = q.where(m.c.status == status)
    if pathway:
        q = q.where(or_(m.c.pathway_id == pathway, m.c.pathway_key == pathway))
    return [_dict(x) for x in conn.execute(q)]


def _due(now: datetime) -> Any:
    return or_(
        and_(m.c.status == "queued", or_(m.c.next_attempt_at.is_(None), m.c.next_attempt_at <= now)),
        and_(m.c.status == "sent", m.c.next_attempt_at <= now),
    )


def due_ids(conn: Connection, now: datetime, limit: int) -> list[str]:
    q = select(m.c.id).where(_due(now)).order_by(m.c.next_attempt_at, m.c.created_at).limit(limit)
    return list(conn.execute(q).scalars())


def claim(conn: Connection, msg_id: str, now: datetime) -> dict[str, Any] | None:
    """Lock one due message for this relay; another replica skips it (PostgreSQL) or waits (SQLite)."""
    q = select(m).where(m.c.id == msg_id, _due(now))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    row = conn.execute(q).first()
    return _dict(row) if row else None


def held_ids(conn: Connection, limit: int) -> list[str]:
    q = select(m.c.id).where(m.c.status == "held").order_by(m.c.created_at).limit(limit)
    return list(conn.execute(q).scalars())


def insert_receipt(conn: Connection, **values: Any) -> None:
    conn.execute(insert(r).values(**values))


def receipts_for(conn: Connection, msg_id: str) -> list[dict[str, Any]]:
    return [_dict(x) for x in conn.execute(select(r).where(r.c.message_id == msg_id).order_by(r.c.id))]


def emit_alert(conn: Connection, topic: str, kind: str, row: dict[str, Any], now: datetime, **extra: Any) -> None:
    """An alert for people (pathway.alerts), written in the same transaction as the state change."""
    body = {
        "type": kind,
        "messageId": row["id"],
        "pathwayKey": row["pathway_key"],
        "pathwayId": row["pathway_id"],
        "trigger": row["trigger"],
        "role": row["role"],
        "recipientHerId": row.get("recipient_her_id"),
        "at": now.isoformat(),
        **extra,
    }
    conn.execute(
        insert(schema.outbox).values(
            topic=topic, record_key=row["pathway_key"], value=json.dumps(body, ensure_ascii=False),
            headers={"correlation-id": row["id"]}, created_at=now,
        )
    )
