"""The collector pause around batches: off while any batch runs, as it was afterwards, never piling up."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from forlop import collector
from forlop.collector import collector_paused


@pytest.fixture(autouse=True)
def _collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_inside_and_on_again_after_even_when_the_batch_fails() -> None:
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("batch failed")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


@contextmanager
def _another_batch_running() -> Iterator[None]:
    """A batch on another thread holds the pause until the block ends."""
    entered, release = threading.Event(), threading.Event()

    def other_batch() -> None:
        with collector_paused():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=other_batch)
    t.start()
    assert entered.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_on_again_only_when_the_last_of_overlapping_batches_ends() -> None:
    with _another_batch_running():
        with collector_paused():
            pass
        assert not gc.isenabled()  # the other thread's batch still runs
    assert gc.isenabled()


def test_overlapping_batches_still_collect_the_young_generation(monkeypatch) -> None:
    monkeypatch.setattr(collector, "YOUNG_LIMIT", 1000)
    with _another_batch_running():
        kept = []
        with collector_paused():
            for _ in range(5000):  # cycles: only the collector frees them
                node: list = []
                node.append(node)
                kept.append(node)
            del kept
            assert gc.get_count()[0] > 1000
        # the other batch still holds the pause, but this one's end collected the young generation
        assert not gc.isenabled()
        assert gc.get_count()[0] < 1000


def test_a_store_transaction_is_a_batch(tmp_path) -> None:
    from forlop.storage import Store

    store = Store(f"sqlite:///{tmp_path}/gc.db")
    try:
        with store.transaction():
            assert not gc.isenabled()
        assert gc.isenabled()
        with store.read():  # a read (an API request) leaves the collector alone
            assert gc.isenabled()
    finally:
        store.dispose()
