"""Messaging fixtures: deps with a fixed clock and predictable MsgIds, example streams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from msgkit import NOW, AddressRegister, id_factory, load_examples

from app.bootstrap import sender_from
from forlop.clock import FixedClock
from forlop.config import Settings, Topics, shipped_xsd_dir
from forlop.events import PathwayEvent
from services.messaging.adapters.directory import FileDirectory
from services.messaging.adapters.schemas import schema_set
from services.messaging.deps import MessagingDeps


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def directory_file(tmp_path: Path) -> Path:
    src = Path(__file__).resolve().parents[2] / "profiles" / "messaging" / "municipal-directory.yaml"
    dst = tmp_path / "directory.yaml"
    dst.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    return dst


@pytest.fixture
def deps(contracts_dir: Path, clock: FixedClock, directory_file: Path) -> MessagingDeps:
    d = FileDirectory(directory_file)
    return MessagingDeps(
        topics=Topics(), schemas=schema_set(shipped_xsd_dir()), municipal=d, gps=d,
        sender=sender_from(Settings()), id_factory=id_factory(), clock=clock, apprec_timeout_s=3600, max_attempts=3,
    )


@pytest.fixture
def examples(contracts_dir: Path) -> dict[str, dict[str, list[PathwayEvent]]]:
    return {s: load_examples(contracts_dir, s) for s in ("dips", "esp")}


@pytest.fixture
def register() -> Iterator[AddressRegister]:
    """The address register over HTTP on 127.0.0.1, empty until a test fills it."""
    reg = AddressRegister()
    yield reg
    reg.stop()


@pytest.fixture
def http_receiver() -> Iterator[Callable[[str], object]]:
    """start(policy) -> a SimulatedReceiver serving HTTP on 127.0.0.1; all stopped afterwards."""
    from forlop_devtools.simulated_receiver import SimulatedReceiver

    started: list[SimulatedReceiver] = []

    def start(policy: str = "ok", port: int = 0) -> SimulatedReceiver:
        receiver = SimulatedReceiver(policy).start_http("127.0.0.1", port)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
