"""Hostile vendor records on the vendor topics of a running pipeline: behind each, a valid record must be
derived within a bounded time (0 stalls).

The records are generated with hypothesis: huge numbers, deep nesting, lone surrogates, NUL, wrong types,
extreme dates, huge strings, random bytes, tombstones, and valid records with one field mutated. Each is
produced to `ehr.dips.pathway-events` or `ehr.esp.hendelser` with the key of the valid record behind it
(one partition, so it is really behind it); the valid record opens a pathway of its own, whose row must
appear in time.

`make fuzz-ingest` (`python -m forlop_devtools.fuzz_ingest --examples 500`) runs many and prints figures
(docs/reliability.md); tests/e2e/test_hostile_records.py runs a few dozen in the suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from sqlalchemy import create_engine, func, select, text

from app.bootstrap import Runtime
from app.serve import ServiceProcess
from forlop.clock import FixedClock
from forlop.config import Topics, load_settings
from forlop.kafka import ConsumerLoop, make_producer
from forlop.storage import Store, schema
from forlop_devtools.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[2]  # the repository (the development tools run from a clone)
CONTRACTS = ROOT / "tests" / "fixtures" / "contracts"
CET = timezone(timedelta(hours=1))
AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=CET)
FOLLOWER_DEADLINE_S = 30.0  # a valid record not derived within this after its hostile one: a stall
HUGE_STRING = 700_000  # characters at most: the record stays below the producer's 1 MiB limit
EXTREME_TIMES = {
    "dips": ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0001-01-01", "9999-12-31",
             "2026-02-30T25:61:00+01:00", "1900-01-01T00:00:00Z"],
    "esp": ["01.01.0001 00:00", "31.12.9999 23:59", "01.01.0001", "31.12.9999", "30.02.2026 25:61"],
}


def templates() -> dict[str, dict[str, Any]]:
    """A valid start-of-pathway record per vendor (the contracts' first example)."""
    return {v: json.loads((CONTRACTS / f"{v}-examples.ndjson").read_text().splitlines()[0]) for v in ("dips", "esp")}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a JSON document (the root excluded)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += [(*prefix, k), *_paths(v, (*prefix, k))]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += [(*prefix, i), *_paths(v, (*prefix, i))]
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def fresh(vendor: str, template: dict[str, Any], n: str) -> dict[str, Any]:
    """The template as a new event of a new pathway: ids of its own."""
    if vendor == "dips":
        return dict(template, eventId=str(uuid.uuid4()), pathway=dict(template["pathway"], id=f"FUZZ-{n}"),
                    document=dict(template["document"], id=f"DOC-FUZZ-{n}"))
    return dict(template, meldingsId=str(uuid.uuid4()), forlopsId=f"eSP-FUZZ-{n}", registreringsId=f"REG-FUZZ-{n}")


def pathway_key(vendor: str, record: dict[str, Any]) -> str:
    return f"dips:{record['pathway']['id']}" if vendor == "dips" else f"esp:{record['forlopsId']}"


_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}|\d{2}\.\d{2}\.\d{4})")  # the template's dates and times
_MARK = "\u2063HOSTILE\u2063"  # where a raw JSON fragment goes into a serialised record


def _with_raw(doc: dict[str, Any], path: tuple, fragment: str) -> bytes:
    """The record with the value at `path` replaced by a raw JSON fragment (what json.dumps cannot write)."""
    return json.dumps(_set(doc, path, _MARK), ensure_ascii=False).replace(json.dumps(_MARK, ensure_ascii=False),
                                                                         fragment).encode("utf-8", "surrogatepass")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile(draw: st.DrawFn, vendor: str, template: dict[str, Any]) -> tuple[str, bytes | None]:
    """(kind, the record's bytes; None for a tombstone) for one vendor."""
    doc = fresh(vendor, template, uuid.uuid4().hex[:10])
    path = draw(st.sampled_from(_paths(doc)))
    leaf_paths = [p for p in _paths(doc) if isinstance(_get(doc, p), str)]
    kind = draw(st.sampled_from(["huge-number", "deep-nesting", "surrogate", "nul", "wrong-type", "extreme-date",
                                 "huge-string", "random-bytes", "tombstone", "mutated", "not-an-object"]))
    if kind == "huge-number":
        digits = draw(st.integers(4301, 20_000))
        return kind, _with_raw(doc, path, draw(st.sampled_from(["", "-"])) + "9" * digits)
    if kind == "deep-nesting":
        depth = draw(st.integers(1_000, 120_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return kind, _with_raw(doc, path, opener * depth + "1" + closer * depth)
    if kind == "surrogate":
        escaped = draw(st.booleans())  # a JSON escape "\ud800", or the bytes of one (not UTF-8)
        where = draw(st.sampled_from(leaf_paths))
        if escaped:
            return kind, _with_raw(doc, where, '"a\\ud800b"')
        return kind, _with_raw(doc, where, '"a\ud800b"')
    if kind == "nul":
        return kind, _with_raw(doc, draw(st.sampled_from(leaf_paths)), '"a\\u0000b"')
    if kind == "wrong-type":
        return kind, json.dumps(_set(doc, path, draw(json_values))).encode()
    if kind == "extreme-date":
        where = draw(st.sampled_from([p for p in leaf_paths if _TIME.match(str(_get(doc, p)))]))
        return kind, json.dumps(_set(doc, where, draw(st.sampled_from(EXTREME_TIMES[vendor])))).encode()
    if kind == "huge-string":
        size = draw(st.integers(100_000, HUGE_STRING))
        return kind, json.dumps(_set(doc, draw(st.sampled_from(leaf_paths)), "x" * size)).encode()
    if kind == "random-bytes":
        return kind, draw(st.binary(max_size=2000))
    if kind == "tombstone":
        return kind, None
    if kind == "not-an-object":
        return kind, json.dumps(draw(json_values)).encode()
    # a valid record with one field changed to another valid-looking value
    mutated = draw(st.text(max_size=20) | st.integers() | st.sampled_from(["", "0", "D99", "13837033318"]))
    return kind, json.dumps(_set(doc, path, mutated)).encode()


def _get(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


class Stall(AssertionError):
    pass


@dataclass
class Probe:
    """Produces a hostile record and a valid one behind it, and waits for the valid one's pathway."""

    rt: Runtime
    producer: KafkaProducer
    deadline_s: float = FOLLOWER_DEADLINE_S
    latencies: list[float] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)

    def __call__(self, vendor: str, kind: str, raw: bytes | None) -> None:
        topic = self.rt.settings.topics.dips if vendor == "dips" else self.rt.settings.topics.esp
        follower = fresh(vendor, templates()[vendor], uuid.uuid4().hex[:10])
        key = (follower["patient"]["nationalId"] if vendor == "dips" else follower["fodselsnummer"]).encode()
        started = time.monotonic()
        self.producer.send(topic, key=key, value=raw)
        self.producer.send(topic, key=key, value=json.dumps(follower).encode())
        self.producer.flush()
        wanted = pathway_key(vendor, follower)
        while time.monotonic() - started < self.deadline_s:
            with self.rt.store.read() as conn:
                if conn.execute(select(func.count()).select_from(schema.pathways)
                                .where(schema.pathways.c.pathway_key == wanted)).scalar_one():
                    self.latencies.append(time.monotonic() - started)
                    self.kinds[kind] += 1
                    return
            time.sleep(0.05)
        raise Stall(f"the valid {vendor} record behind a {kind} record was not derived within {self.deadline_s} s")


def run_examples(probe: Probe, examples: int, seed: int | None = None) -> None:
    """`examples` hostile records through `probe` (no shrinking: a stall is reported as it was found)."""
    t = templates()
    strategy = st.sampled_from(["dips", "esp"]).flatmap(lambda v: st.tuples(st.just(v), hostile(v, t[v])))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is not None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(strategy)
    def one(example: tuple[str, tuple[str, bytes | None]]) -> None:
        vendor, (kind, raw) = example
        probe(vendor, kind, raw)

    one()


def figures(store: Store, probe: Probe, elapsed: float) -> dict[str, Any]:
    with store.read() as conn:
        letters = dict(conn.execute(select(schema.dead_letters.c.stage, func.count())
                                    .group_by(schema.dead_letters.c.stage)).all())
        parked = conn.execute(select(func.count()).select_from(schema.outbox)
                              .where(schema.outbox.c.parked_at.is_not(None))).scalar_one()
        accepted = conn.execute(select(func.count()).select_from(schema.inbound_events)).scalar_one()
    lat = sorted(probe.latencies)
    return {
        "store": store.dialect, "hostile_records": len(lat), "stalls": 0, "by_kind": dict(sorted(probe.kinds.items())),
        "dead_letters_by_stage": letters, "outbox_parked": parked, "events_accepted": accepted,
        "follower_latency_s": {"p50": round(statistics.median(lat), 3),
                               "p95": round(lat[int(len(lat) * 0.95) - 1], 3), "max": round(lat[-1], 3)} if lat else {},
        "elapsed_s": round(elapsed, 1),
    }


def start_pipeline(broker: str, store: Store, data_dir: Path) -> tuple[Runtime, Callable[[], None]]:
    """Ingest, pathway and messaging services on threads against `broker` and `store`; (runtime, stop)."""

    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    cfg = replace(load_settings({"FORLOP_DATA_DIR": str(data_dir)}), kafka_bootstrap=broker, topics=topics,
                  consumer_group=f"fuzz-{suffix}", max_poll_interval_ms=3000, partitions=3, http_host="127.0.0.1",
                  http_port=0)
    rt = Runtime(cfg, store, FixedClock(AS_OF))
    rt.ensure_topics()
    procs = [ServiceProcess(Runtime(cfg, store, rt.clock), s).build().start() for s in ("ingest", "pathway", "messaging")]
    for proc in procs:
        for w in proc.workers:
            if isinstance(w, ConsumerLoop) and not w.joined.wait(60):
                raise RuntimeError(f"{w.service} consumer did not join its group")

    def stop() -> None:
        for proc in procs:
            proc.stop()

    return rt, stop


def _store(kind: str, postgres_url: str, tmp: Path) -> tuple[Store, Callable[[], None]]:
    """A migrated store for one run and how to remove it (on PostgreSQL a schema of its own)."""
    if kind == "sqlite":
        store = Store(f"sqlite:///{tmp / 'fuzz.db'}")
        store.migrate()
        return store, lambda: None

    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    store = Store(f"{postgres_url}{'&' if '?' in postgres_url else '?'}options=-csearch_path%3D{name}")
    store.migrate()

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()

    return store, drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m forlop_devtools.fuzz_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="hostile records per store (default 500)")
    parser.add_argument("--store", action="append", choices=("sqlite", "postgresql"),
                        help="the store(s) to run against (default: sqlite; repeat for both)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seed", type=int, default=None, help="derandomize (the same examples every run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.CRITICAL)  # the services' warnings about each record are the point, not news
    results = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="forlop-fuzz-") as tmp:
        for kind in args.store or ["sqlite"]:
            store, drop = _store(kind, args.postgres_url, Path(tmp))
            rt, stop = start_pipeline(broker.bootstrap, store, Path(tmp))
            producer = make_producer(rt.settings)
            probe = Probe(rt, producer)
            started = time.monotonic()
            try:
                run_examples(probe, args.examples, args.seed)
            except Stall as stall:
                print(f"STALL: {stall}", file=sys.stderr)
                return 1
            finally:
                producer.close()
                stop()
            results.append(figures(store, probe, time.monotonic() - started))
            store.dispose()
            drop()
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            lat = r["follower_latency_s"]
            print(f"{r['store']}: {r['hostile_records']} hostile records, {r['stalls']} stalls; valid record behind "
                  f"each derived in p50 {lat.get('p50')} s, p95 {lat.get('p95')} s, max {lat.get('max')} s; "
                  f"dead letters {r['dead_letters_by_stage']}, events accepted {r['events_accepted']}, "
                  f"outbox parked {r['outbox_parked']}; {r['elapsed_s']} s")
            print(f"  by kind: {r['by_kind']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
