"""The directory transport's AppRec inbox, read as untrusted: no symbolic link is followed, a file's
size is checked before it is read, and a pass reads a bounded batch."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from msgkit import NOW, payload
from sqlalchemy import func, select

from forlop.config import load_settings
from forlop.storage import schema
from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.transport import DirectoryTransport, make_transport
from services.messaging.adapters.xmlsafe import MAX_BYTES
from services.messaging.handlers import handle_status_changed
from services.messaging.relay import Relay


def _receipt_count(store) -> int:
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(schema.receipts)).scalar_one()


def _sent_message(store, deps, examples, transport) -> str:
    events = examples["dips"]["PPR-4745328"]
    with store.transaction() as conn:
        handle_status_changed(conn, payload(events), NOW, deps)
    Relay(store, transport, deps).run_once()
    (name,) = [p.stem for p in transport.outbox.glob("*.xml")]
    return name


def test_a_symbolic_link_in_the_inbox_is_moved_aside_unread(store, deps, examples, tmp_path):
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in")
    msg_id = _sent_message(store, deps, examples, transport)
    secret = tmp_path / "elsewhere" / "secret.xml"  # e.g. a file only the service may read
    secret.parent.mkdir()
    secret.write_bytes(build_apprec(msg_id, "DIALOG_HELSEFAGLIG", "ok", NOW, "from-the-link-target"))
    (transport.inbox / "apprec-link.xml").symlink_to(secret)

    assert Relay(store, transport, deps).poll_receipts() == 0
    assert _receipt_count(store) == 0  # the target's content was not stored
    refused = transport.refused / "apprec-link.xml"
    assert refused.is_symlink() and secret.exists()  # the link itself moved aside, its target untouched
    assert "symbolic link" in Path(f"{refused}.reason").read_text()
    assert not list(transport.processed.iterdir())


def test_an_oversized_file_is_refused_before_it_is_read(store, deps, tmp_path):
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in")
    big = transport.inbox / "apprec-big.xml"
    with big.open("wb") as fp:  # 200 MB, sparse: nothing is written, a read would return all of it
        fp.truncate(200 * 1024 * 1024)
    tracemalloc.start()
    try:
        assert Relay(store, transport, deps).poll_receipts() == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024  # the size came from fstat of the opened file: it was never read whole
    assert _receipt_count(store) == 0
    reason = (transport.refused / "apprec-big.xml.reason").read_text()
    assert f"{200 * 1024 * 1024} bytes: larger than {MAX_BYTES}" in reason


def test_a_directory_or_fifo_in_the_inbox_is_moved_aside(store, deps, tmp_path):
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in")
    (transport.inbox / "a-directory").mkdir()
    os.mkfifo(transport.inbox / "a-fifo")  # opened without blocking, then refused
    assert Relay(store, transport, deps).poll_receipts() == 0
    assert sorted(p.name for p in transport.refused.iterdir()) == [
        "a-directory", "a-directory.reason", "a-fifo", "a-fifo.reason"]


def test_a_pass_reads_a_bounded_batch_oldest_name_first(store, deps, tmp_path):
    transport = DirectoryTransport(tmp_path / "out", tmp_path / "in", batch=50)
    for i in range(120):
        (transport.inbox / f"apprec-{i:04d}.xml").write_bytes(
            build_apprec(f"00000000-0000-4000-8000-{i:012d}", "DIALOG_HELSEFAGLIG", "ok", NOW, f"a{i}"))
    relay = Relay(store, transport, deps)
    seen = iter(transport.receipts())
    first_path, _ = next(seen)  # a generator: files are read one at a time as the relay takes them
    assert first_path.name == "apprec-0000.xml"
    assert [relay.poll_receipts() for _ in range(4)] == [50, 50, 20, 0]
    assert _receipt_count(store) == 120 and len(list(transport.processed.iterdir())) == 120


@pytest.mark.parametrize(("env", "batch"), [({}, 50), ({"FORLOP_APPREC_INBOX_BATCH": "7"}, 7)])
def test_the_batch_is_a_setting(tmp_path, env, batch):
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_TRANSPORT": "directory", **env})
    transport = make_transport(settings)
    assert isinstance(transport, DirectoryTransport) and transport.batch == batch
