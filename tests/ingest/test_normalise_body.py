"""Request bodies: one object, an array or NDJSON; bad JSON is named by its line."""

from __future__ import annotations

import pytest

from services.ingest.domain.normalise import BodyError, parse_body


def test_one_object() -> None:
    assert parse_body("application/json", b'{"a": 1}') == [{"a": 1}]


def test_an_array_with_charset_and_byte_order_mark() -> None:
    body = '\ufeff[{"a": 1}, {"b": "ø"}]'.encode()
    assert parse_body("application/json; charset=utf-8", body) == [{"a": 1}, {"b": "ø"}]


def test_ndjson_skips_blank_lines() -> None:
    body = b'{"a": 1}\n\n{"a": 2}\r\n{"a": 3}\n'
    assert parse_body("application/x-ndjson", body) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_bad_ndjson_names_the_line() -> None:
    with pytest.raises(BodyError, match=r"^line 3: not valid JSON: unexpected character, expected ',' or '}' \(column 9\)"):
        parse_body("application/x-ndjson", b'{"a": 1}\n{"a": 2}\n{"a": 3 "b": 4}\n')


def test_bad_json_names_the_line() -> None:
    with pytest.raises(BodyError, match=r"^line 2: not valid JSON"):
        parse_body("application/json", b'[{"a": 1},\n {"a": }]')


def test_several_json_values_without_ndjson_content_type_get_a_hint() -> None:
    with pytest.raises(BodyError, match="application/x-ndjson"):
        parse_body("application/json", b'{"a": 1}\n{"a": 2}\n')


def test_empty_bodies_hold_no_records() -> None:
    assert parse_body("application/json", b"  \n") == []
    assert parse_body("application/x-ndjson", b"") == []


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"42", "expected a JSON object or an array"),
        ("application/json", b"\xff\xfe{}", "not UTF-8"),
        ("text/csv", b"a,b", "unsupported content type"),
    ],
)
def test_bodies_that_hold_no_records(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(BodyError, match=message):
        parse_body(content_type, body)
