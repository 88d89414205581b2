"""`/messages` through the real app (create_app with the messaging blueprint under the read scope), and /metrics."""

from __future__ import annotations

import yaml
from msgkit import NOW, payload
from prometheus_client import REGISTRY

from forlop.auth import SCOPE_READ, SCOPE_WRITE_EVENTS, TokenVerifier, mint_dev_token
from forlop.config import load_settings
from services.api.app import ApiDeps, create_app
from services.messaging.adapters import repository
from services.messaging.adapters.transport import HttpTransport
from services.messaging.entrypoints.http import messages_bp
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay


def _app(store, clock, tmp_path):
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path / "api")})
    deps = ApiDeps(settings, store, clock, TokenVerifier(settings), readiness=[], blueprints=[(messages_bp, SCOPE_READ)])
    app = create_app(deps)
    return app.test_client(), {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_READ])}"}, settings


def _populate(store, deps, examples, directory_file, http_receiver):
    """PPR-1810111 with municipality 5001 missing from the register (one held), PPR-4745328 sent and answered."""
    data = yaml.safe_load(directory_file.read_text())
    data["municipalities"].pop("5001")
    directory_file.write_text(yaml.safe_dump(data))
    with store.transaction() as conn:
        for pathway in ("PPR-1810111", "PPR-4745328"):
            handle_status_changed(conn, payload(examples["dips"][pathway]), NOW, deps)
    receiver = http_receiver("ok")
    deps.transport_name = "http"
    Relay(store, HttpTransport(receiver.url, timeout=5), deps).run_once()
    with store.read() as conn:
        return repository.list_messages(conn)


def test_messages_api(store, deps, examples, directory_file, http_receiver, clock, tmp_path) -> None:
    rows = _populate(store, deps, examples, directory_file, http_receiver)
    client, auth, settings = _app(store, clock, tmp_path)

    resp = client.get("/messages?status=held", headers=auth)
    assert resp.status_code == 200
    (held,) = resp.get_json()
    assert held["status"] == "held" and held["role"] == "municipality" and held["pathway"] == "PPR-1810111"
    assert "municipality 5001" in held["statusReason"] and held["recipientHerId"] is None

    resp = client.get("/messages?pathway=PPR-4745328", headers=auth)
    (one,) = resp.get_json()
    assert one["pathway"] == "PPR-4745328" and one["status"] == "acknowledged" and "xml" not in one
    assert {m["pathway"] for m in client.get("/messages", headers=auth).get_json()} == {"PPR-1810111", "PPR-4745328"}
    assert len(client.get("/messages", headers=auth).get_json()) == len(rows)

    resp = client.get(f"/messages/{one['id']}", headers=auth)
    assert resp.status_code == 200
    body = resp.get_json()
    stored = next(r for r in rows if r["id"] == one["id"])
    assert body["xml"] == stored["xml"] and f"<MsgId>{one['id']}</MsgId>" in body["xml"]
    assert [(r["status"], r["outcome"]) for r in body["receipts"]] == [("ok", "applied")]
    assert body["notes"] == []

    # Auth: no token 401, a token without the read scope 403; both OperationOutcomes.
    resp = client.get("/messages")
    assert resp.status_code == 401 and resp.get_json()["resourceType"] == "OperationOutcome"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"/messages/{one['id']}").status_code == 401
    write_only = {"Authorization": f"Bearer {mint_dev_token(settings, [SCOPE_WRITE_EVENTS])}"}
    resp = client.get(f"/messages/{one['id']}", headers=write_only)
    assert resp.status_code == 403 and resp.get_json()["issue"][0]["code"] == "forbidden"

    resp = client.get("/messages/00000000-0000-0000-0000-00000000dead", headers=auth)
    assert resp.status_code == 404 and resp.mimetype == "application/fhir+json"
    outcome = resp.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "not-found"

    for bad in ("status=bogus", "_count=many"):
        resp = client.get(f"/messages?{bad}", headers=auth)
        assert resp.status_code == 400 and resp.get_json()["resourceType"] == "OperationOutcome"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_messaging_counters_count_the_real_paths_and_show_on_metrics(
    store, deps, examples, directory_file, http_receiver, clock, tmp_path
) -> None:
    before = {
        "sent": _sample("forlop_message_sends_total", transport="http", outcome="sent"),
        "ack": _sample("forlop_message_transitions_total", status="acknowledged"),
        "held": _sample("forlop_message_transitions_total", status="held"),
        "queued": _sample("forlop_message_transitions_total", status="queued"),
        "apprec": _sample("forlop_apprecs_total", status="ok", outcome="applied"),
    }
    _populate(store, deps, examples, directory_file, http_receiver)
    # Queued on insert: 4 of PPR-1810111 (1 held) + 1; all five sent over HTTP and acknowledged from the body.
    assert _sample("forlop_message_transitions_total", status="queued") - before["queued"] == 5
    assert _sample("forlop_message_transitions_total", status="held") - before["held"] == 1
    assert _sample("forlop_message_sends_total", transport="http", outcome="sent") - before["sent"] == 5
    assert _sample("forlop_message_transitions_total", status="acknowledged") - before["ack"] == 5
    assert _sample("forlop_apprecs_total", status="ok", outcome="applied") - before["apprec"] == 5

    client, _auth, _settings = _app(store, clock, tmp_path)
    text = client.get("/metrics").get_data(as_text=True)
    for line in (
        f'forlop_message_sends_total{{outcome="sent",transport="http"}} '
        f'{_sample("forlop_message_sends_total", transport="http", outcome="sent")}',
        f'forlop_message_transitions_total{{status="acknowledged"}} '
        f'{_sample("forlop_message_transitions_total", status="acknowledged")}',
        f'forlop_apprecs_total{{outcome="applied",status="ok"}} '
        f'{_sample("forlop_apprecs_total", status="ok", outcome="applied")}',
        "# TYPE forlop_message_sent_without_consent_total counter",
    ):
        assert line in text, line
