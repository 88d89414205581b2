"""The record boundary (issue #21): whatever one vendor record holds, `check_record` (what the Kafka
consumer, HTTP intake and replay call) accepts it or raises RejectedEvent naming the problem, and an
accepted one maps to FHIR without an error (no date overflows in UTC)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st

from forlop.clock import parse_time
from forlop.events import PathwayEvent
from forlop.storage import Store
from services.ingest.adapters.repository import SqlIngestUnitOfWork
from services.ingest.domain.normalise import RejectedEvent
from services.ingest.handlers import InboundRecord, check_record, check_records, ingest
from services.pathway.domain.derive import derive
from services.pathway.domain.fhir_mapping import map_pathway
from services.pathway.domain.rules import RuleBook

NOW = parse_time("2026-01-05T10:00:00+01:00")


def _rejected(source: str, raw: bytes | str | dict) -> list[tuple[str, str]]:
    with pytest.raises(RejectedEvent) as caught:
        check_record(source, InboundRecord(raw, "kafka:test/0@1"))
    return [(p.field, p.rule) for p in caught.value.problems]


def _bytes(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _with(record: dict, dotted: str, value: object) -> dict:
    out = json.loads(json.dumps(record))
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


@pytest.fixture
def dips(example_records) -> dict:
    return example_records["dips"][0]


@pytest.fixture
def esp(example_records) -> dict:
    return example_records["esp"][0]


def test_kafka_records_that_stalled_the_ingest_consumer_are_rejected_with_reasons(dips, esp) -> None:
    """Each raised something other than RejectedEvent (ValueError, RecursionError, a UnicodeEncodeError
    at the database), or was accepted and stalled the pathway service with an OverflowError."""
    number = json.dumps(dips)[:-1] + ', "n": ' + "9" * 5000 + "}"
    assert _rejected("dips", number.encode()) == [("$", "number-range")]
    assert _rejected("dips", b"[" * 100_000 + b"]" * 100_000) == [("$", "max-record-bytes")]
    assert _rejected("dips", b"[" * 2_000 + b"]" * 2_000) == [("$", "max-depth")]  # past what orjson reads
    assert _rejected("dips", (json.dumps(dips)[:-1] + ', "x": ' + "[" * 500 + "]" * 500 + "}").encode()) == [
        ("x.0.0.0.0.0.0.0.0.0.0.0", "max-depth")]
    assert _rejected("dips", json.dumps(_with(dips, "pathway.id", "\ud800")).encode()) == [("$", "unicode")]
    assert _rejected("dips", _bytes(_with(dips, "pathway.id", "\ud800"))) == [("$", "encoding")]  # its bytes: not UTF-8
    assert _rejected("dips", _with(dips, "pathway.id", "\ud800")) == [("pathway.id", "unicode")]  # a parsed value
    assert _rejected("dips", _bytes(_with(dips, "unit.name", "a\x00b"))) == [("unit.name", "nul-character")]
    assert _rejected("dips", _bytes(_with(dips, "unit.name", "a\x07b"))) == [("unit.name", "control-character")]
    assert _rejected("dips", _bytes(dips).replace(b"DIPS Arena", b"DIPS\xff")) == [("$", "encoding")]
    assert _rejected("dips", _bytes(_with(dips, "eventTime", "0001-01-01T00:00:00+01:00"))) == [
        ("eventTime", "date-range")]
    assert _rejected("dips", _bytes(_with(dips, "recordedTime", "0001-01-01T00:00:00+14:00"))) == [
        ("recordedTime", "date-range")]
    assert _rejected("dips", _bytes(_with(dips, "recordedTime", "9999-12-31T23:30:00-01:00"))) == [
        ("recordedTime", "date-range")]
    assert _rejected("dips", _bytes(_with(dips, "document.date", "1899-12-31"))) == [("document.date", "date-range")]
    assert _rejected("esp", _bytes(_with(esp, "registrertTid", "01.01.0001 00:00"))) == [
        ("registrertTid", "date-range")]
    assert _rejected("esp", _bytes(_with(esp, "hendelsesdato", "31.12.9999"))) == [("hendelsesdato", "date-range")]
    assert _rejected("dips", _bytes(_with(dips, "unit.name", "x" * 2_000_000))) == [("$", "max-record-bytes")]
    assert _rejected("dips", _with(dips, "unit.name", "x" * 2_000_000)) == [("unit.name", "max-string-length")]
    assert _rejected("dips", _bytes(_with(dips, "unit.name", "x" * 201))) == [("unit.name", "maxLength")]
    assert _rejected("esp", _bytes(_with(esp, "meldingsId", "m" * 101))) == [("meldingsId", "maxLength")]
    assert _rejected("esp", _bytes(_with(esp, "meldingsId", "m\nforged log line"))) == [("meldingsId", "pattern")]
    assert _rejected("dips", _bytes({**dips, "tags": list(range(101))})) == [("tags", "max-items")]
    assert _rejected("dips", _bytes({**dips, **{f"x{i}": 1 for i in range(100)}})) == [("$", "max-properties")]
    assert _rejected("dips", b"") == [("$", "json")]
    assert _rejected("dips", b"\xef\xbb\xbf{}") == [("$", "json")]  # a byte order mark: not JSON text


@pytest.mark.parametrize(("source", "field", "value"), [
    ("dips", "patient.municipality", "٥٠٠١"),  # Arabic-Indic digits: Python's \d and isdigit() take them
    ("dips", "patient.municipality", "50²1"),
    ("dips", "patient.nationalId", "١٣٨٣٧٠٣٣٣١٩"),
    ("dips", "source.organisation.orgNumber", "９83974899"),  # fullwidth
    ("dips", "unit.herId", "81407١٢"),
    ("dips", "gp.hpr", "9144٩00"),
    ("esp", "bostedskommune", "٥٠٠١"),
    ("esp", "fodselsnummer", "1590791853٧"),
    ("esp", "enhetHerId", "８140712"),
])
def test_digits_are_ascii_digits(source, field, value, example_records) -> None:
    assert (field, "pattern") in _rejected(source, _with(example_records[source][0], field, value))


def test_check_records_gives_every_record_its_verdict_and_raises_nothing(dips) -> None:
    records = [InboundRecord(raw, "kafka") for raw in (
        _bytes(dips), b"[" * 3000 + b"]" * 3000, b'{"a": 1e999}', b"\xff", "\ud800", {"a": float("nan")},
        {"a": 2**70}, {1: "a"}, [], "null", _bytes(_with(dips, "eventTime", "2026-13-45T10:00:00+01:00")))]
    verdicts = check_records("dips", records)
    assert isinstance(verdicts[0], PathwayEvent)
    assert all(isinstance(v, list) and v for v in verdicts[1:])


def test_hostile_records_between_valid_ones_are_dead_lettered_and_the_rest_accepted(
        store: Store, example_records) -> None:
    """What the Kafka consumer does with a poll: one transaction, the hostile records dead-lettered with
    their reasons, the valid ones accepted (on both stores: PostgreSQL refused lone surrogates and NULs)."""
    from forlop.config import Topics

    dips = example_records["dips"]
    hostile = [b'{"n": ' + b"9" * 5000 + b"}", b"[" * 3000 + b"]" * 3000,
               json.dumps(_with(dips[0], "pathway.id", "\ud800")).encode(), _bytes(_with(dips[0], "pathway.id", "\ud800")),
               json.dumps(_with(dips[0], "unit.name", "a\x00")).encode(),
               _bytes(_with(dips[0], "eventTime", "0001-01-01T00:00:00+14:00"))]
    records = [InboundRecord(raw, f"kafka:ehr.dips.pathway-events/0@{i}") for i, raw in
               enumerate([_bytes(dips[0]), *hostile, _bytes(dips[1])])]
    with store.transaction() as conn:
        result = ingest(SqlIngestUnitOfWork(conn), "dips", records, NOW, Topics())
    assert len(result.accepted) == 2 and len(result.dead_letter_ids) == len(hostile)
    assert [problems[0].rule for _, problems in result.rejected] == [
        "number-range", "max-depth", "unicode", "encoding", "nul-character", "date-range"]


# --- property: nothing a record holds gets past check_record and then breaks the pathway service -------

_HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "\ud800", "٣", "²", "9" * 400, "0001-01-01T00:00:00+14:00",
                     "9999-12-31T23:59:59-12:00", "1900-01-01T00:00:00+14:00", "2100-12-31T23:59:59-12:00",
                     "01.01.0001 00:00", "31.12.9999 23:59", "01.01.1900 00:00", "31.12.2100 23:59",
                     "1900-01-01", "2100-12-31", "0001-01-01", "2026-02-29", "2024-02-29T24:00:00+01:00"]),
)
_HOSTILE_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=True, allow_infinity=True), _HOSTILE_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=8,
)


# anywhere in years 1-9999; at their ends, where an offset takes the moment out of Python's years in UTC;
# near the bounds (1900-01-01, 2100-12-31), where an offset crosses them in UTC
_MOMENTS = st.one_of(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
                     st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 1, 23, 59)),
                     st.datetimes(min_value=datetime(9999, 12, 31), max_value=datetime(9999, 12, 31, 23, 59)),
                     st.datetimes(min_value=datetime(1899, 12, 30), max_value=datetime(1900, 1, 2)),
                     st.datetimes(min_value=datetime(2100, 12, 30), max_value=datetime(2101, 1, 2)))
_OFFSETS = st.integers(-14 * 4, 14 * 4).map(lambda q: f"{'+' if q >= 0 else '-'}{abs(q) // 4:02d}:{abs(q) % 4 * 15:02d}")


_MOMENT_FIELDS = {"eventtime", "recordedtime", "originaltime", "newtime", "time", "date", "firstattendancedeadline",
                  "registrerttid", "opprinneligtid", "nytid", "tidspunkt", "hendelsesdato", "fristforstesamtale"}


def _vendor_value(source: str, field: str) -> st.SearchStrategy[object]:
    """A value for one field: mostly of its own kind (a date or time anywhere in years 1-9999, with any
    offset; a hostile string), sometimes anything at all."""
    name = field.rsplit(".", 1)[-1].lower()
    if source == "dips" and name.endswith("time"):
        own: st.SearchStrategy[object] = st.builds(lambda m, o: m.isoformat(timespec="seconds") + o, _MOMENTS, _OFFSETS)
    elif source == "dips" and name in ("date", "firstattendancedeadline"):
        own = _MOMENTS.map(lambda m: m.date().isoformat())
    elif source == "esp" and name in ("registrerttid", "opprinneligtid", "nytid", "tidspunkt"):
        own = _MOMENTS.map(lambda m: m.strftime("%d.%m.") + f"{m.year:04d}" + m.strftime(" %H:%M"))
    elif source == "esp" and name in ("hendelsesdato", "fristforstesamtale"):
        own = _MOMENTS.map(lambda m: m.strftime("%d.%m.") + f"{m.year:04d}")
    else:
        own = _HOSTILE_TEXT
    return st.one_of(own, own, own, _HOSTILE_VALUE)


def _leaf_paths(record: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in record.items():
        path = f"{prefix}{key}"
        out += _leaf_paths(value, path + ".") if isinstance(value, dict) else [path]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_record_with_hostile_values_is_rejected_or_maps_to_fhir(example_records, data) -> None:
    source = data.draw(st.sampled_from(["dips", "esp"]))
    record = data.draw(st.sampled_from(example_records[source]))
    for _ in range(data.draw(st.integers(1, 2))):
        fields = _leaf_paths(record)
        moments = [f for f in fields if f.rsplit(".", 1)[-1].lower() in _MOMENT_FIELDS]
        field = data.draw(st.sampled_from(moments) if moments and data.draw(st.booleans()) else st.sampled_from(fields))
        record = _with(record, field, data.draw(_vendor_value(source, field)))
    raw = data.draw(st.sampled_from(["dict", "bytes", "text"]))
    payload = record if raw == "dict" else json.dumps(record) if raw == "text" else json.dumps(record).encode()
    try:
        event = check_record(source, InboundRecord(payload, "hypothesis"))
    except RejectedEvent as rejected:
        assert rejected.problems and all(p.rule and p.message for p in rejected.problems)
        tally(f"rejected: {rejected.problems[0].rule}")
        return
    tally("accepted")
    history = [event]
    status = derive(history, RuleBook.load(), NOW)
    map_pathway(status, history, validate=True)  # fhir.resources: every value valid R4
    assert isinstance(event.occurred_at, datetime)
