"""The address register over HTTP (GET /municipalities/{nr}, POST /gp-lookup) against a real local server.

Unknown (404) or unreachable (5xx) answers hold the message with a reason; nothing is guessed.
When the register knows the recipient, the relay pass or `forlop messages retry` releases it, same MsgId.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from msgkit import NOW, payload

from app.cli import main
from forlop.storage import Store
from services.messaging.adapters import repository
from services.messaging.adapters.directory import HttpDirectory
from services.messaging.adapters.transport import HttpTransport
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay

TRONDHEIM = {
    "name": "Forløpskoordinator psykisk helse og rus", "herId": "9975011", "dialogmelding": "1.1",
    "organisation": {"name": "Trondheim kommune (syntetisk)", "herId": "9975010"},
}
GP = {"name": "Fastlege Syntetisk", "herId": "9980042", "office": {"name": "Legekontoret (syntetisk)", "herId": "9980040"}}


@pytest.fixture
def http_deps(deps, register):
    directory = HttpDirectory(register.url, timeout=5)
    deps.municipal = deps.gps = directory
    deps.transport_name = "http"
    return deps


def _rows(store, key):
    with store.read() as conn:
        return repository.rows_for_pathway(conn, key)


def _by(rows, role, trigger):
    (row,) = [r for r in rows if r["role"] == role and r["trigger"] == trigger]
    return row


def test_unknown_municipality_is_held_then_released_by_the_relay_pass(
    store, http_deps, register, examples, http_receiver
) -> None:
    events = examples["dips"]["PPR-1810111"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, http_deps)
    held = _by(_rows(store, events[0].pathway_key), "municipality", "evaluation")
    assert held["status"] == "held" and held["xml"] is None
    assert held["status_reason"] == (
        "unresolved recipient: no receiving service for municipality 5001 in the address register")
    receiver = http_receiver("ok")
    relay = Relay(store, HttpTransport(receiver.url, timeout=5), http_deps)
    relay.run_once()  # the others go; the held one stays held
    assert _by(_rows(store, events[0].pathway_key), "municipality", "evaluation")["status"] == "held"
    assert held["id"] not in receiver.deliveries

    register.municipalities["5001"] = TRONDHEIM  # the register is fixed
    assert relay.run_once() == 2  # released, then sent (and acknowledged from the response body)
    row = _by(_rows(store, events[0].pathway_key), "municipality", "evaluation")
    assert row["id"] == held["id"] and row["status"] == "acknowledged" and row["recipient_her_id"] == "9975011"
    assert "<Id>9975010</Id>" in row["xml"] and f"<MsgId>{held['id']}</MsgId>" in row["xml"]
    assert receiver.deliveries[held["id"]] == 1
    # The register is asked by kommunenummer in the path; the national id never appears in a URL.
    paths = [p for _m, p, _b in register.server.requests]
    assert "/municipalities/5001" in paths
    assert not any(events[0].patient.national_id in p for p in paths)


def test_unreachable_register_holds_and_never_guesses(store, http_deps, register, examples, http_receiver) -> None:
    events = examples["dips"]["PPR-1810111"]
    register.down = True
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, http_deps)
    held = _by(_rows(store, events[0].pathway_key), "municipality", "evaluation")
    assert held["status"] == "held" and "5001" in held["status_reason"]
    register.down = False
    register.municipalities["5001"] = TRONDHEIM
    receiver = http_receiver("ok")
    Relay(store, HttpTransport(receiver.url, timeout=5), http_deps).run_once()
    row = _by(_rows(store, events[0].pathway_key), "municipality", "evaluation")
    assert row["id"] == held["id"] and row["status"] == "acknowledged"


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(argv))
    return rc, capsys.readouterr().out


def test_unknown_gp_is_held_then_released_by_messages_retry(
    tmp_path, contracts_dir, monkeypatch, capsys, deps, register, examples, http_receiver
) -> None:
    """GP lookup over HTTP (events without the GP): held while unknown, `forlop messages retry` releases it."""
    receiver = http_receiver("ok")
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    for name, value in {
        "FORLOP_DATABASE_URL": db, "FORLOP_DATA_DIR": str(tmp_path),
        "FORLOP_MUNICIPAL_DIRECTORY": register.url, "FORLOP_TRANSPORT": "http", "FORLOP_TRANSPORT_URL": receiver.url,
        "FORLOP_LOG_FORMAT": "text", "FORLOP_LOG_LEVEL": "ERROR",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("FORLOP_GP_DIRECTORY", "FORLOP_CLOCK"):
        monkeypatch.delenv(name, raising=False)
    register.municipalities["5001"] = TRONDHEIM
    deps.municipal = deps.gps = HttpDirectory(register.url, timeout=5)
    events = [replace(e, gp=None) for e in examples["dips"]["PPR-4745328"]]
    store = Store(db)
    store.migrate()
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    (held,) = _rows(store, events[0].pathway_key)
    assert held["role"] == "gp" and held["status"] == "held"
    assert held["status_reason"] == "unresolved recipient: the patient's GP is not known (fastlegeregister)"
    lookups = [b for m, p, b in register.server.requests if (m, p) == ("POST", "/gp-lookup")]
    assert lookups and events[0].patient.national_id.encode() in lookups[0]  # in the body, not the URL

    rc, out = _cli(capsys, "messages", "retry", held["id"])
    assert rc == 1 and "still held" in out and "GP is not known" in out
    assert _rows(store, events[0].pathway_key)[0]["status"] == "held"

    register.gps[events[0].patient.national_id] = GP  # the fastlege register now knows
    rc, out = _cli(capsys, "messages", "retry", held["id"])
    assert rc == 0 and f"{held['id']}: acknowledged" in out
    (row,) = _rows(store, events[0].pathway_key)
    assert row["id"] == held["id"] and row["recipient_her_id"] == "9980042"
    assert "<Id>9980040</Id>" in row["xml"] and "<Id>9980042</Id>" in row["xml"]
    assert receiver.deliveries == {held["id"]: 1}
    store.dispose()
