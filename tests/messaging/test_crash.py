"""Crash between send and record: the relay dies, restarts, resends with the same MsgId; exactly once in effect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from msgkit import NOW, payload

from forlop.config import shipped_xsd_dir
from forlop.storage import Store
from forlop_devtools.simulated_receiver import SimulatedReceiver
from services.messaging.adapters import repository
from services.messaging.handlers import handle_status_changed

# The relay in a process of its own, sending through the directory transport. With a fault (N), its
# transport is `DiesAfterSends`: the Nth message is handed over (the file is written), then the
# process dies at once (os._exit, no cleanup), before the relay records the send.
RELAY = r"""
import os
import sys
from datetime import datetime
from pathlib import Path

from app.bootstrap import sender_from
from forlop.clock import FixedClock
from forlop.config import Settings, Topics
from forlop.storage import Store
from services.messaging.adapters.directory import FileDirectory
from services.messaging.adapters.schemas import schema_set
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.deps import MessagingDeps
from services.messaging.relay import Relay


class DiesAfterSends:
    def __init__(self, transport, sends):
        self.transport, self.left = transport, sends

    def send(self, msg_id, xml):
        answer = self.transport.send(msg_id, xml)
        self.left -= 1
        if self.left == 0:
            os._exit(17)
        return answer


db, xsd, out, inbox, now, fault = sys.argv[1:7]
d = FileDirectory(Path(out).parent / "directory.yaml")
deps = MessagingDeps(topics=Topics(), schemas=schema_set(xsd), municipal=d, gps=d, sender=sender_from(Settings()),
                     clock=FixedClock(datetime.fromisoformat(now)))
transport = DirectoryTransport(Path(out), Path(inbox))
Relay(Store(db), DiesAfterSends(transport, int(fault)) if fault else transport, deps).run_once()
"""


def _relay(tmp_path: Path, db: str, xsd: Path, fault: int | None) -> int:
    """Run one relay pass in a process of its own; `fault`: it dies right after the fault-th hand-over."""
    proc = subprocess.run(
        [sys.executable, "-c", RELAY, db, str(xsd), str(tmp_path / "out"), str(tmp_path / "in"), NOW.isoformat(),
         str(fault or "")],
        capture_output=True, text=True, timeout=120,
    )
    return proc.returncode


def test_crash_after_send_is_exactly_once_in_effect(tmp_path, deps, examples, contracts_dir, directory_file) -> None:
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    store = Store(db)
    store.migrate()
    (tmp_path / "directory.yaml").write_text(directory_file.read_text())
    with store.transaction() as conn:
        for events in examples["dips"].values():
            handle_status_changed(conn, payload(events), NOW, deps)
        queued = [r for r in repository.list_messages(conn) if r["status"] == "queued"]
    assert len(queued) >= 6
    receiver = SimulatedReceiver("ok")

    assert _relay(tmp_path, db, Path(shipped_xsd_dir()), 3) == 17  # died after the 3rd hand-over
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    assert len(receiver.deliveries) == 3
    with store.read() as conn:
        assert sum(r["status"] == "sent" for r in repository.list_messages(conn)) == 2  # 3rd never recorded

    assert _relay(tmp_path, db, Path(shipped_xsd_dir()), None) == 0  # restart: the rest, and the 3rd again
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    assert len(receiver.effects) == len(queued) == len(receiver.deliveries)
    assert receiver.duplicates == 1
    assert set(receiver.deliveries) == {r["id"] for r in queued}
    store.dispose()


def test_a_withdrawal_after_a_crash_in_the_send_is_corrected(tmp_path, deps, examples, directory_file) -> None:
    """The relay died after the hand-over, before its record: the message may have arrived. A
    withdrawal then owes a correction, and the message itself still goes (same MsgId), never
    "withdrawn before sending"."""
    from dataclasses import replace

    from forlop.events import EventKind

    db = f"sqlite:///{tmp_path / 'crash.db'}"
    store = Store(db)
    store.migrate()
    (tmp_path / "directory.yaml").write_text(directory_file.read_text())
    events = examples["dips"]["PPR-4745328"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    receiver = SimulatedReceiver("ok")
    assert _relay(tmp_path, db, Path(shipped_xsd_dir()), 1) == 17
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    (original,) = list(receiver.deliveries)
    with store.read() as conn:
        (row,) = repository.list_messages(conn)
    assert row["id"] == original and row["status"] == "queued" and row["sent_at"] is not None

    decision = next(e for e in events if e.code and e.code[3:4] == "C")
    withdrawal = replace(decision, event_id=decision.event_id + ":w", kind=EventKind.REGISTRATION_WITHDRAWN,
                         withdraws=decision.registration_id, registration_id=None, code=None)
    with store.transaction() as conn:
        handle_status_changed(conn, payload([*events, withdrawal]), NOW, deps)
    with store.read() as conn:
        rows = {r["trigger"]: r for r in repository.list_messages(conn)}
    assert rows["decision"]["status"] == "queued" and rows["correction"]["corrects"] == original

    assert _relay(tmp_path, db, Path(shipped_xsd_dir()), None) == 0
    receiver.poll_directory(tmp_path / "out", tmp_path / "in")
    assert receiver.deliveries[original] == 2 and len(receiver.effects) == 2  # the original once in effect
    assert set(receiver.deliveries) == {original, rows["correction"]["id"]}
    store.dispose()
