"""`forlop audit`: who accessed a patient's data, the chain verified, on the command line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from app import cli
from forlop import audit
from forlop.storage import Store
from tests.platform.test_audit_chain import NID, T0, _drop_guards, record


def test_forlop_audit_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORLOP_AUDIT_RETENTION_DAYS", "3")
    store = Store(f"sqlite:///{tmp_path / 'forlop.db'}")
    store.migrate()
    audit.write(store, record(T0, NID, client="dps-nordvest"))
    audit.write(store, record(T0 + timedelta(days=1), "01017000027", client="other"))
    audit.write(store, record(T0 + timedelta(days=2), NID, client="kommune-5001", status=404))
    assert cli.main(["audit", "--patient", NID]) == 0
    out = capsys.readouterr().out
    assert "2 accesses" in out and "dps-nordvest" in out and "kommune-5001" in out and "other" not in out
    assert NID not in out  # the patient is named by pseudonym only
    assert cli.main(["audit", "--patient", NID, "--from", "2026-01-06", "--to", "2026-01-07"]) == 0
    out = capsys.readouterr().out
    assert "1 accesses" in out and "kommune-5001" in out and "refused/failed (404)" in out
    assert cli.main(["audit", "--verify"]) == 0
    assert "3 records verified" in capsys.readouterr().out
    with store.transaction() as conn:
        _drop_guards(conn, store)
        conn.execute(text("UPDATE audit_log SET record = replace(record, 'other', 'OTHER')"))
    assert cli.main(["audit", "--verify"]) == 1
    assert "BROKEN" in capsys.readouterr().out
    assert cli.main(["audit", "--patient", "not-an-id!"]) == 2
    store.dispose()
