"""Messaging's adapters read their settings from `Settings` alone: an environment variable the settings
did not read (a test's, a shell's) changes nothing behind their back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from forlop.config import load_settings
from services.messaging.adapters.directory import DEFAULT_FILE, FileDirectory, directories_from
from services.messaging.adapters.transport import DirectoryTransport, directory_paths, make_transport


def test_the_address_registers_are_the_settings(tmp_path: Path, monkeypatch) -> None:
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    monkeypatch.setenv("FORLOP_MUNICIPAL_DIRECTORY", str(tmp_path / "from-the-environment.yaml"))
    monkeypatch.setenv("FORLOP_GP_DIRECTORY", str(tmp_path / "gps-from-the-environment.yaml"))
    municipal, gps = directories_from(settings)
    assert isinstance(municipal, FileDirectory) and municipal.path == DEFAULT_FILE
    assert isinstance(gps, FileDirectory) and gps.path == DEFAULT_FILE

    named = replace(settings, municipal_directory=str(tmp_path / "m.yaml"))
    municipal, gps = directories_from(named)
    assert municipal.path == gps.path == tmp_path / "m.yaml"  # the GP lookup defaults to the municipal file


def test_the_directory_transport_lives_under_its_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORLOP_TRANSPORT_OUTBOX_DIR", str(tmp_path / "elsewhere-out"))
    monkeypatch.setenv("FORLOP_TRANSPORT_INBOX_DIR", str(tmp_path / "elsewhere-in"))
    settings = load_settings({"FORLOP_DATA_DIR": str(tmp_path / "data"), "FORLOP_TRANSPORT": "directory"})
    assert directory_paths(settings) == (tmp_path / "data" / "messages" / "outbox",
                                         tmp_path / "data" / "messages" / "inbox")
    moved = replace(settings, transport_dir=str(tmp_path / "transport"))
    transport = make_transport(moved)
    assert isinstance(transport, DirectoryTransport)
    assert (transport.outbox, transport.inbox) == (tmp_path / "transport" / "outbox", tmp_path / "transport" / "inbox")
    assert not (tmp_path / "elsewhere-out").exists() and not (tmp_path / "elsewhere-in").exists()
