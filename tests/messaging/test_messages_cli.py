"""`forlop messages list|show|retry` through app.cli.main against a temporary SQLite database."""

from __future__ import annotations

import json

import pytest
import yaml
from msgkit import NOW, payload

from app.cli import main
from forlop.storage import Store
from services.messaging.adapters import repository
from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.handlers import handle_apprec, handle_status_changed
from services.messaging.relay import Relay

KEYS = ["id", "pathway", "recipientHerId", "role", "trigger", "messageType", "status", "attempts"]


@pytest.fixture
def cli_env(tmp_path, contracts_dir, directory_file, monkeypatch):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    for name, value in {
        "FORLOP_DATABASE_URL": db, "FORLOP_DATA_DIR": str(tmp_path),
        "FORLOP_MUNICIPAL_DIRECTORY": str(directory_file), "FORLOP_TRANSPORT": "directory",
        "FORLOP_TRANSPORT_DIR": str(tmp_path / "transport"), "FORLOP_LOG_FORMAT": "text", "FORLOP_LOG_LEVEL": "ERROR",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("FORLOP_GP_DIRECTORY", "FORLOP_CLOCK"):
        monkeypatch.delenv(name, raising=False)
    store = Store(db)
    store.migrate()
    yield store
    store.dispose()


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def _populate(store, deps, examples, directory_file, tmp_path):
    """PPR-1810111 with 5001 unknown (its municipality message held); PPR-4745328 sent and rejected."""
    data = yaml.safe_load(directory_file.read_text())
    entry = data["municipalities"].pop("5001")
    directory_file.write_text(yaml.safe_dump(data))
    with store.transaction() as conn:
        handle_status_changed(conn, payload(examples["dips"]["PPR-1810111"]), NOW, deps)
        handle_status_changed(conn, payload(examples["dips"]["PPR-4745328"]), NOW, deps)
    outbox = tmp_path / "transport" / "outbox"
    Relay(store, DirectoryTransport(outbox, tmp_path / "transport" / "inbox"), deps).run_once()
    with store.transaction() as conn:
        (rej,) = repository.list_messages(conn, pathway="PPR-4745328")
        handle_apprec(conn, build_apprec(rej["id"], "DIALOG_HELSEFAGLIG", "rejected", NOW, "r1", [("E21", "x")]),
                      NOW, deps)
    data["municipalities"]["5001"] = entry
    return data, outbox


def test_list_json_filters_and_keys(cli_env, capsys, deps, examples, directory_file, tmp_path) -> None:
    _populate(cli_env, deps, examples, directory_file, tmp_path)
    rc, out = _cli(capsys, "messages", "list", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(lines) == 6
    for line in lines:
        assert list(line) == KEYS
    assert {(m["pathway"], m["status"]) for m in lines} == {
        ("PPR-1810111", "sent"), ("PPR-1810111", "held"), ("PPR-4745328", "rejected")}

    rc, out = _cli(capsys, "messages", "list", "--json", "--status", "held")
    (held,) = [json.loads(line) for line in out.splitlines()]
    assert held == {"id": held["id"], "pathway": "PPR-1810111", "recipientHerId": None, "role": "municipality",
                    "trigger": "evaluation", "messageType": "DIALOG_HELSEFAGLIG", "status": "held", "attempts": 0}

    rc, out = _cli(capsys, "messages", "list", "--json", "--pathway", "PPR-4745328")
    (one,) = [json.loads(line) for line in out.splitlines()]
    assert one["status"] == "rejected" and one["attempts"] == 1 and one["role"] == "gp" and one["trigger"] == "decision"
    rc, out = _cli(capsys, "messages", "list", "--pathway", "dips:PPR-4745328")  # the pathway key works too
    assert rc == 0 and len(out.splitlines()) == 1 and "rejected by receiver: E21" in out


def test_show_and_retry(cli_env, capsys, deps, examples, directory_file, tmp_path) -> None:
    data, outbox = _populate(cli_env, deps, examples, directory_file, tmp_path)
    with cli_env.read() as conn:
        held = repository.list_messages(conn, status="held")[0]
        (rejected,) = repository.list_messages(conn, status="rejected")
        sent = repository.list_messages(conn, status="sent")[0]

    rc, out = _cli(capsys, "messages", "show", rejected["id"])
    assert rc == 0 and f"id: {rejected['id']}" in out and "status: rejected" in out
    assert "receipt: rejected (applied)" in out and f"<MsgId>{rejected['id']}</MsgId>" in out
    assert _cli(capsys, "messages", "show", "no-such-id") == (1, "forlop: no message no-such-id\n")

    # Still unknown in the register: stays held, with the reason.
    rc, out = _cli(capsys, "messages", "retry", held["id"])
    assert rc == 1 and "still held" in out and "municipality 5001" in out
    directory_file.write_text(yaml.safe_dump(data))  # the register is fixed
    rc, out = _cli(capsys, "messages", "retry", held["id"])
    assert rc == 0 and f"{held['id']}: sent" in out
    with cli_env.read() as conn:
        released = repository.get(conn, held["id"])
    assert released["recipient_her_id"] == "9975011" and (outbox / f"{held['id']}.xml").read_text() == released["xml"]

    # Rejected: queued again and resent by the relay pass with the same MsgId and the same bytes.
    (outbox / f"{rejected['id']}.xml").unlink()
    rc, out = _cli(capsys, "messages", "retry", rejected["id"])
    assert rc == 0 and f"{rejected['id']}: sent" in out
    with cli_env.read() as conn:
        again = repository.get(conn, rejected["id"])
    assert again["xml"] == rejected["xml"] and again["attempts"] == 1
    assert (outbox / f"{rejected['id']}.xml").read_text() == rejected["xml"]

    rc, out = _cli(capsys, "messages", "retry", sent["id"])
    assert rc == 1 and "only held, failed or rejected" in out
    assert _cli(capsys, "messages", "retry", "no-such-id")[0] == 1


def test_list_shows_the_sent_without_consent_note(cli_env, capsys, deps, examples, tmp_path) -> None:
    from dataclasses import replace
    from datetime import timedelta

    from forlop.events import EventKind

    events = examples["dips"]["PPR-1810111"]
    with cli_env.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(cli_env, DirectoryTransport(tmp_path / "o", tmp_path / "i"), deps).run_once()
    consent = next(e for e in events if e.kind is EventKind.CONSENT_CHANGED)
    evaluation = next(e for e in events if e.code and e.code.endswith("E"))
    late = replace(consent, event_id="dips:late", registration_id="late", consent_municipality=False,
                   occurred_at=evaluation.occurred_at - timedelta(days=1))
    with cli_env.transaction() as conn:
        handle_status_changed(conn, payload([*events, late]), NOW, deps)
    rc, out = _cli(capsys, "messages", "list", "--status", "sent")
    noted = [line for line in out.splitlines() if "[note: sentWithoutConsentInForce]" in line]
    assert rc == 0 and len(noted) == 1 and " municipality " in noted[0]
    rc, out = _cli(capsys, "messages", "list", "--json")
    assert all(list(json.loads(line)) == KEYS for line in out.splitlines())  # the JSON contract is unchanged
    muni = next(json.loads(line) for line in out.splitlines() if json.loads(line)["role"] == "municipality")
    rc, out = _cli(capsys, "messages", "show", muni["id"])
    assert "notes: ['sentWithoutConsentInForce']" in out
    # Rejected by the municipality: a retry would send it again without consent; refused.
    with cli_env.transaction() as conn:
        repository.update_message(conn, muni["id"], status="rejected")
    rc, out = _cli(capsys, "messages", "retry", muni["id"])
    assert rc == 1 and "without consent in force" in out
    with cli_env.read() as conn:
        assert repository.get(conn, muni["id"])["status"] == "rejected"
