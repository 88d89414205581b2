"""SQL for the `messages` and `receipts` tables, and alerts through the outbox. SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from forlop.storage import schema
from forlop.storage.bulk import among

m, r, mp = schema.messages, schema.receipts, schema.messaging_pathways


def _dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def rows_for_pathway(conn: Connection, pathway_key: str) -> list[dict[str, Any]]:
    return [_dict(x) for x in conn.execute(select(m).where(m.c.pathway_key == pathway_key))]


# --- locks -------------------------------------------------------------------------------------
# Every transaction takes its locks in one order: first the pathways' rows in messaging_pathways (by
# key), then message rows (by id), each set in one statement; a path that needs more later takes
# only rows it holds already, or one row, or skips rows others hold (SKIP LOCKED). So no two
# transactions wait for each other in a circle (PostgreSQL; SQLite runs one writer at a time).

def lock_pathways(conn: Connection, pathway_keys: set[str], now: datetime) -> dict[str, int]:
    """Lock the pathways' rows in messaging_pathways (made at version 0 if new), in key order;
    return each one's newest reconciled history version."""
    keys = sorted(pathway_keys)
    if not keys:
        return {}
    conn.execute(_insert_missing(conn, mp), [{"pathway_key": k, "history_version": 0, "updated_at": now} for k in keys])
    q = select(mp.c.pathway_key, mp.c.history_version).where(among(mp.c.pathway_key, keys, conn.dialect.name))
    if conn.dialect.name == "postgresql":
        q = q.order_by(mp.c.pathway_key).with_for_update()
    return {row.pathway_key: row.history_version for row in conn.execute(q)}


def set_history_versions(conn: Connection, versions: dict[str, int], now: datetime) -> None:
    if versions:
        conn.execute(update(mp).where(mp.c.pathway_key == bindparam("k_key")),
                     [{"k_key": k, "history_version": v, "updated_at": now} for k, v in sorted(versions.items())])


def lock_messages(conn: Connection, ids: list[str], *, skip_locked: bool = False) -> list[dict[str, Any]]:
    """The rows of these messages, locked in id order in one statement (PostgreSQL), sorted by id."""
    if not ids:
        return []
    q = select(m).where(among(m.c.id, sorted(set(ids)), conn.dialect.name)).order_by(m.c.id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=skip_locked)
    return [_dict(x) for x in conn.execute(q)]


def lock_for_reconcile(conn: Connection, pathway_keys: set[str], msg_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The pathways' messages (and the messages `msg_ids`, which AppRecs in the same batch answer),
    locked in id order in one statement; returns the pathways' rows by pathway key."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in pathway_keys}
    if not pathway_keys and not msg_ids:
        return out
    dialect = conn.dialect.name
    where = among(m.c.pathway_key, sorted(pathway_keys), dialect) if pathway_keys else None
    if msg_ids:
        by_id = among(m.c.id, sorted(msg_ids), dialect)
        where = by_id if where is None else or_(where, by_id)
    q = select(m).where(where).order_by(m.c.id)
    if dialect == "postgresql":
        q = q.with_for_update()
    for x in conn.execute(q):
        if x.pathway_key in out:
            out[x.pathway_key].append(_dict(x))
    return out


def _insert_missing(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def rows_for_pathways(conn: Connection, pathway_keys: set[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in pathway_keys}
    keys = sorted(pathway_keys)
    for i in range(0, len(keys), 500):
        for x in conn.execute(select(m).where(m.c.pathway_key.in_(keys[i : i + 500]))):
            out[x.pathway_key].append(_dict(x))
    return out


def has_dedupe_key(conn: Connection, dedupe_key: str) -> bool:
    return conn.execute(select(m.c.id).where(m.c.dedupe_key == dedupe_key)).first() is not None


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


def insert_receipt(conn: Connection, **values: Any) -> bool:
    """Store a receipt unless one with its dedupe key is stored already; True if stored."""
    return conn.execute(_insert_missing(conn, r).values(**values).returning(r.c.id)).first() is not None


def receipt_raw(conn: Connection, dedupe_key: str) -> str | None:
    return conn.execute(select(r.c.raw).where(r.c.dedupe_key == dedupe_key)).scalar()


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
