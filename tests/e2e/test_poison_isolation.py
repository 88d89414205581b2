"""One poison record costs that record, never the consumer: each consumer kind against the real broker.

For the ingest (both vendor topics), pathway (pathway.events), messaging (pathway.status-changed) and
receipts (messages.apprec) consumers: a poison record between two valid ones of the same partition is
dead-lettered with its topic, partition, offset, exact bytes and reason; the valid record after it is
processed; the offset is committed past it; a restarted consumer does not see it again.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import pytest
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, select

from app.bootstrap import Runtime
from forlop.clock import FixedClock
from forlop.config import Topics, load_settings
from forlop.kafka import ConsumerLoop, Record, client_options, group_id, make_producer
from forlop.storage import Store, schema
from services.ingest.handlers import InboundRecord, check_record
from services.messaging.adapters.apprec import build_apprec
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.broker

CET = timezone(timedelta(hours=1))
AS_OF = datetime(2026, 1, 5, 10, 0, tzinfo=CET)


def _lines(contracts_dir, vendor: str) -> list[dict]:
    return [json.loads(line) for line in (contracts_dir / f"{vendor}-examples.ndjson").read_text().splitlines() if line]


def _exists(store: Store, column, value) -> bool:  # noqa: ANN001 - a Column
    with store.read() as conn:
        return conn.execute(select(func.count()).select_from(column.table).where(column == value)).scalar_one() > 0


@dataclass
class Case:
    """Three valid records and one poison record for one consumer's topic, all with one key (one partition)."""

    stage: str
    topic: str
    key: bytes
    valid: list[bytes]  # [before the poison, after it, after the restart]
    poison: bytes | None
    processed: Callable[[Store, int], bool]  # was valid[i] processed?


def runtime_for(broker: str, store: Store, tmp_path) -> Runtime:  # noqa: ANN001
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(**{k: f"{getattr(Topics(), k)}.{suffix}" for k in Topics.__dataclass_fields__})
    settings = replace(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}), kafka_bootstrap=broker, topics=topics,
                       consumer_group=f"test-{suffix}", max_poll_interval_ms=1000, partitions=2)
    rt = Runtime(settings, store, FixedClock(AS_OF))
    rt.ensure_topics()
    return rt


def cases(rt: Runtime, contracts_dir) -> list[Case]:  # noqa: ANN001
    t = rt.settings.topics
    dips, esp = _lines(contracts_dir, "dips")[:3], _lines(contracts_dir, "esp")[:3]
    # 5,000 digits: json.loads raises ValueError (not JSONDecodeError), which ingest did not catch
    huge_number = json.dumps(dips[0])[:-1].encode() + b', "extra": ' + b"9" * 5000 + b"}"
    deep = b"[" * 100_000 + b"]" * 100_000  # RecursionError in the parser
    events = [check_record("dips", InboundRecord(line, "t")).to_dict()
              for line in _lines(contracts_dir, "dips") if line["pathway"]["id"] == "PPR-1810111"]
    # passes ingest's shape, breaks the pathway service: year 1 at +14:00 overflows on the way to UTC
    year_one = dict(events[0], event_id="dips:poison-year-one", recorded_at="0001-01-01T00:00:00+14:00")
    by_pathway: dict[str, list[dict]] = {}
    for line in _lines(contracts_dir, "dips"):
        event = check_record("dips", InboundRecord(line, "t")).to_dict()
        by_pathway.setdefault(event["pathway_id"], []).append(event)
    pathways = ["PPR-1810111", "PPR-4745328", "PPR-6175466"]
    status_changed = [json.dumps({"pathway_key": f"dips:{p}", "pathway_id": p, "source": "dips",
                                  "events": by_pathway[p]}).encode() for p in pathways]
    apprec_ids = [str(uuid.uuid4()) for _ in range(3)]
    apprecs = [build_apprec(str(uuid.uuid4()), "DIALOG_FORESPORSEL", "ok", AS_OF, a) for a in apprec_ids]
    return [
        Case("ingest", t.dips, b"13837033319", [json.dumps(x).encode() for x in dips], huge_number,
             lambda s, i: _exists(s, schema.inbound_events.c.event_id, f"dips:{dips[i]['eventId']}")),
        Case("ingest", t.esp, b"15907918537", [json.dumps(x).encode() for x in esp], deep,
             lambda s, i: _exists(s, schema.inbound_events.c.event_id, f"esp:{esp[i]['meldingsId']}")),
        Case("pathway", t.events, b"13837033319", [json.dumps(e).encode() for e in events[:3]],
             json.dumps(year_one).encode(),
             lambda s, i: _exists(s, schema.pathway_events.c.event_id, events[i]["event_id"])),
        Case("messaging", t.status_changed, b"13837033319", status_changed,
             json.dumps({"pathway_key": "dips:X", "events": [{"kind": "nonsense"}]}).encode(),
             lambda s, i: _exists(s, schema.messages.c.pathway_key, f"dips:{pathways[i]}")),
        Case("receipts", t.apprec, b"apprec", apprecs, None,  # a tombstone: a record without a value
             lambda s, i: _exists(s, schema.receipts.c.apprec_msg_id, apprec_ids[i])),
    ]


class Watched:
    """A service's consumer loop on a thread; remembers every (topic, partition, offset) its handler saw."""

    def __init__(self, rt: Runtime, service: str) -> None:
        self.loop: ConsumerLoop = rt.consumer(service, wait=lambda s: None)
        self.seen: list[tuple[str, int, int]] = []
        inner = self.loop.handler

        def handler(batch: Sequence[Record]) -> None:
            self.seen.extend((r.topic, r.partition, r.offset) for r in batch)
            inner(batch)

        self.loop.handler = handler
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, rt: Runtime, services: Sequence[str]) -> dict[str, Watched]:
        """The loops of `services`, started together (each joins its group: seconds with the broker; a
        restart's join can wait out the stopped member's session on a busy machine, hence the margin)."""
        loops = {s: cls(rt, s) for s in services}
        for service, watched in loops.items():
            assert watched.loop.joined.wait(90), f"{service} did not join its group in 90 s"
        return loops

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(15)


def _committed(rt: Runtime, service: str, tp: TopicPartition) -> int | None:
    probe = KafkaConsumer(**client_options(rt.settings), group_id=group_id(rt.settings, service),
                          enable_auto_commit=False)
    try:
        return probe.committed(tp)
    finally:
        probe.close()


def test_every_consumer_dead_letters_a_poison_record_and_goes_on(broker, store, tmp_path, contracts_dir) -> None:
    rt = runtime_for(broker, store, tmp_path)
    all_cases = cases(rt, contracts_dir)
    producer = make_producer(rt.settings)
    sent: dict[int, list] = {}
    for n, case in enumerate(all_cases):
        sent[n] = [producer.send(case.topic, key=case.key, value=v).get(30)
                   for v in (case.valid[0], case.poison, case.valid[1])]
    services = {"ingest": "ingest", "pathway": "pathway", "messaging": "messaging", "receipts": "messaging"}
    loops = Watched.start(rt, ("ingest", "pathway", "messaging"))
    try:
        for case in all_cases:
            eventually(lambda case=case: case.processed(store, 0) and case.processed(store, 1), 60)
        with store.read() as conn:
            letters = {row.topic: row for row in conn.execute(select(schema.dead_letters))}
        assert set(letters) == {case.topic for case in all_cases}
        for n, case in enumerate(all_cases):
            poison = sent[n][1]
            assert poison.partition == sent[n][0].partition == sent[n][2].partition  # one partition, in order
            row = letters[case.topic]
            assert (row.stage, row.kafka_partition, row.kafka_offset) == (case.stage, poison.partition, poison.offset)
            assert row.raw_bytes == case.poison  # every byte (None: the tombstone)
            assert row.status == "open" and row.reasons and row.reasons[0]["message"]
            assert row.origin == f"kafka:{case.topic}/{poison.partition}@{poison.offset}"
            if case.stage != "ingest":  # a handler's exception (ingest may reject it with reasons instead)
                assert row.error["type"] and row.error["traceback"]
                assert row.reasons[0]["rule"] == "exception" and "twice the same way" in row.reasons[0]["message"]
            tp = TopicPartition(case.topic, poison.partition)
            end = sent[n][2].offset + 1
            eventually(lambda tp=tp, case=case, end=end: _committed(rt, services[case.stage], tp) == end, 30)
    finally:
        for watched in loops.values():
            watched.stop()

    # Restarted: the consumers start after the poison records; they never see them again.
    loops = Watched.start(rt, ("ingest", "pathway", "messaging"))
    try:
        for case in all_cases:
            producer.send(case.topic, key=case.key, value=case.valid[2]).get(30)
        for case in all_cases:
            eventually(lambda case=case: case.processed(store, 2), 60)
        seen = {offset for watched in loops.values() for offset in watched.seen}
        for n, case in enumerate(all_cases):
            poison = sent[n][1]
            assert (case.topic, poison.partition, poison.offset) not in seen
    finally:
        for watched in loops.values():
            watched.stop()
        producer.close()
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar_one() == len(all_cases)


def test_a_conflicting_duplicate_from_kafka_is_a_dead_letter_naming_the_id(broker, store, tmp_path, contracts_dir):
    from app.dlq import replay

    rt = runtime_for(broker, store, tmp_path)
    dips = _lines(contracts_dir, "dips")
    changed = dict(dips[0], unit=dict(dips[0]["unit"], name="DPS Sørvest poliklinikk"))
    producer = make_producer(rt.settings)
    key = dips[0]["patient"]["nationalId"].encode()
    values = [json.dumps(dips[0]), json.dumps(dips[0], indent=2), json.dumps(changed), json.dumps(dips[1])]
    sent = [producer.send(rt.settings.topics.dips, key=key, value=v.encode()).get(30) for v in values]
    producer.close()
    loops = Watched.start(rt, ("ingest",))
    try:
        eventually(lambda: _exists(store, schema.inbound_events.c.event_id, f"dips:{dips[1]['eventId']}"), 60)
    finally:
        loops["ingest"].stop()
    with store.read() as conn:
        [letter] = conn.execute(select(schema.dead_letters)).all()  # the re-indented redelivery is a duplicate
    event_id = f"dips:{dips[0]['eventId']}"
    assert (letter.topic, letter.kafka_offset, letter.raw_bytes) == (rt.settings.topics.dips, sent[2].offset,
                                                                     json.dumps(changed).encode())
    assert letter.reasons[0]["rule"] == "conflicting-duplicate" and event_id in letter.reasons[0]["message"]
    assert replay(rt, letter.id).status == "still-rejected"  # kept, replayable, still a conflict
