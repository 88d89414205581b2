"""GET /messages and GET /messages/<id>. The app applies auth (blueprint guard) before these run.

Errors are FHIR OperationOutcomes, like every other error of the API.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from forlop import audit
from forlop.fhir.outcome import error
from forlop.http import INT32_MAX, one_value, whole_number
from forlop.storage import Store
from services.messaging import metrics  # noqa: F401 - registers the messaging counters on this process's /metrics
from services.messaging.adapters import repository
from services.messaging.domain.model import MessageStatus
from services.messaging.views import message_view

messages_bp = Blueprint("messages", __name__)


def _store() -> Store:
    """The store the app publishes for its blueprints (FORLOP_STORE, set by `services.api.app.create_app`)."""
    return current_app.config["FORLOP_STORE"]


MAX_COUNT = 1000  # messages in one answer; a larger _count gives this many


@messages_bp.get("/messages")
def list_messages() -> Response:
    # BadParameter (ASCII digits, one value each) is answered by the app: 400 naming the parameter
    raw = one_value(request.args, "_count")
    limit = 500 if raw is None else min(MAX_COUNT, whole_number("_count", raw, 1, INT32_MAX))
    status = one_value(request.args, "status")
    if status and status not in {s.value for s in MessageStatus}:
        return error(400, "value", f"status={status[:40]!r}: use one of {', '.join(s.value for s in MessageStatus)}",
                     "status")
    with _store().read() as conn:
        rows = repository.list_messages(conn, status, one_value(request.args, "pathway"), limit)
    audit.touched(pathway_keys=[r["pathway_key"] for r in rows], resources=[f"messages/{r['id']}" for r in rows])
    return jsonify([message_view(r) for r in rows])


@messages_bp.get("/messages/<msg_id>")
def get_message(msg_id: str) -> Response:
    with _store().read() as conn:
        row = repository.get(conn, msg_id)
        receipts = repository.receipts_for(conn, msg_id) if row else []
    if row is None:
        return error(404, "not-found", f"no message {msg_id[:64]}")
    audit.touched(pathway_keys=[row["pathway_key"]], resources=[f"messages/{msg_id}"])
    view = message_view(row, with_xml=True)
    view["receipts"] = [
        {"status": r["status"], "outcome": r["outcome"], "errors": r["errors"], "receivedAt": r["received_at"].isoformat()}
        for r in receipts
    ]
    return jsonify(view)
