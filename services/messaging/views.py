"""The public shape of a message row (API and `forlop messages list --json`)."""

from __future__ import annotations

from typing import Any


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# Notes a person should see next to the status (keys in the row's details that are set to true).
NOTES = ("sentWithoutConsentInForce",)


def notes_of(row: dict[str, Any]) -> list[str]:
    details = row.get("details") or {}
    return [n for n in NOTES if details.get(n)]


def message_view(row: dict[str, Any], *, with_xml: bool = False) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "pathway": row["pathway_id"],
        "pathwayKey": row["pathway_key"],
        "recipientHerId": row.get("recipient_her_id"),
        "role": row["role"],
        "trigger": row["trigger"],
        "messageType": row["message_type"],
        "status": row["status"],
        "statusReason": row.get("status_reason"),
        "attempts": row.get("attempts") or 0,
        "corrects": row.get("corrects"),
        "createdAt": _iso(row.get("created_at")),
        "sentAt": _iso(row.get("sent_at")),
        "nextAttemptAt": _iso(row.get("next_attempt_at")),
        "settledAt": _iso(row.get("settled_at")),
        "notes": notes_of(row),
    }
    if with_xml:
        view["xml"] = row.get("xml")
    return view
