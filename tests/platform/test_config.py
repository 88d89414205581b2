"""Settings: sane defaults, and a bad value stops the start with a message naming it."""

from __future__ import annotations

import pytest

from forlop.config import ConfigError, load_settings


def test_defaults_are_embedded_sqlite_in_the_data_dir(tmp_path):
    s = load_settings({"FORLOP_DATA_DIR": str(tmp_path)})
    assert s.mode == "embedded"
    assert s.database_url == f"sqlite:///{tmp_path / 'forlop.db'}"
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topics.dips == "ehr.dips.pathway-events"
    assert s.topics.esp == "ehr.esp.hendelser"
    assert s.consumer_group == "forlop"
    assert s.clock is None
    assert s.http_workers == 1  # one API process; Kubernetes scales the API by replicas
    assert load_settings({"FORLOP_HTTP_WORKERS": "3"}).http_workers == 3
    assert s.http_threads == 2 and load_settings({"FORLOP_HTTP_THREADS": "8"}).http_threads == 8


def test_topics_group_and_clock_from_environment():
    s = load_settings(
        {
            "FORLOP_TOPIC_DIPS": "x.dips",
            "FORLOP_CONSUMER_GROUP": "g",
            "FORLOP_CLOCK": "2026-01-05T10:00:00+01:00",
            "FORLOP_DATABASE_URL": "postgresql://u@db:5432/forlop",
        }
    )
    assert s.topics.dips == "x.dips"
    assert s.consumer_group == "g"
    assert s.clock is not None and s.clock.isoformat() == "2026-01-05T10:00:00+01:00"
    assert s.database_url.startswith("postgresql://")


def test_production_validates_against_the_shipped_schemas_without_a_setting():
    from forlop.config import shipped_xsd_dir

    s = load_settings({"FORLOP_MODE": "production", "FORLOP_JWT_JWKS_URL": "https://helseid.example/jwks"})
    assert s.xsd_dir == shipped_xsd_dir()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FORLOP_DATABASE_URL": "mysql://x/y"}, "FORLOP_DATABASE_URL"),
        ({"FORLOP_DATABASE_URL": "not a url"}, "FORLOP_DATABASE_URL"),
        ({"FORLOP_KAFKA_BOOTSTRAP": "localhost"}, "FORLOP_KAFKA_BOOTSTRAP"),
        ({"FORLOP_CLOCK": "yesterday"}, "FORLOP_CLOCK"),
        ({"FORLOP_CLOCK": "2026-01-05T10:00:00"}, "FORLOP_CLOCK"),
        ({"FORLOP_HTTP_PORT": "eighty"}, "FORLOP_HTTP_PORT"),
        ({"FORLOP_MODE": "prod"}, "FORLOP_MODE"),
        ({"FORLOP_XSD_DIR": "/does/not/exist"}, "FORLOP_XSD_DIR"),
        ({"FORLOP_XSD_DIR": "/tmp"}, "FORLOP_XSD_DIR"),  # a folder, but no MsgHead schema in it
        ({"FORLOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "FORLOP_KAFKA_SASL_MECHANISM"),
        ({"FORLOP_TRANSPORT": "http"}, "FORLOP_TRANSPORT_URL"),
        ({"FORLOP_TOPIC_PARTITIONS": "0"}, "FORLOP_TOPIC_PARTITIONS"),
        ({"FORLOP_HTTP_WORKERS": "0"}, "FORLOP_HTTP_WORKERS"),
        ({"FORLOP_HTTP_WORKERS": "two"}, "FORLOP_HTTP_WORKERS"),
        ({"FORLOP_HTTP_THREADS": "0"}, "FORLOP_HTTP_THREADS"),
        ({"FORLOP_HTTP_THREADS": "٣"}, "FORLOP_HTTP_THREADS"),  # int() reads Arabic-Indic digits
        ({"FORLOP_HTTP_MAX_BODY_BYTES": "10"}, "FORLOP_HTTP_MAX_BODY_BYTES"),
        ({"FORLOP_HTTP_MAX_RECORDS": "0"}, "FORLOP_HTTP_MAX_RECORDS"),
        ({"FORLOP_HTTP_MAX_URL_BYTES": "1_000"}, "FORLOP_HTTP_MAX_URL_BYTES"),
        ({"FORLOP_HTTP_MAX_HEADER_BYTES": "100"}, "FORLOP_HTTP_MAX_HEADER_BYTES"),
        ({"FORLOP_HTTP_MAX_PROBLEMS": "0"}, "FORLOP_HTTP_MAX_PROBLEMS"),
        ({"FORLOP_HTTP_CONNECTION_LIMIT": "many"}, "FORLOP_HTTP_CONNECTION_LIMIT"),
        ({"FORLOP_HTTP_CHANNEL_TIMEOUT_S": "0"}, "FORLOP_HTTP_CHANNEL_TIMEOUT_S"),
        ({"FORLOP_API_STATEMENT_TIMEOUT_MS": "-1"}, "FORLOP_API_STATEMENT_TIMEOUT_MS"),
        ({"FORLOP_API_MAX_SEARCH_VALUES": "0"}, "FORLOP_API_MAX_SEARCH_VALUES"),
        ({"FORLOP_API_MAX_SEARCH_REPEATS": "²"}, "FORLOP_API_MAX_SEARCH_REPEATS"),
        ({"FORLOP_API_MAX_OFFSET": "-5"}, "FORLOP_API_MAX_OFFSET"),
        ({"FORLOP_SENDER_ORG_NUMBER": "98397489²"}, "FORLOP_SENDER_ORG_NUMBER"),  # "²".isdigit() is true
        ({"FORLOP_SENDER_HER_ID": "٩٩٧٠٠٠١"}, "FORLOP_SENDER_HER_ID"),
        ({"FORLOP_KAFKA_BOOTSTRAP": "host:٩٠٩٢"}, "FORLOP_KAFKA_BOOTSTRAP"),
    ],
)
def test_bad_setting_fails_naming_it(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_cli_reports_a_bad_setting_and_exits_2(monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("FORLOP_KAFKA_BOOTSTRAP", "nohostport")
    assert main(["migrate"]) == 2
    assert "FORLOP_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def test_the_request_limits_have_sane_defaults_and_are_read_from_the_environment():
    defaults = load_settings({})
    assert (defaults.http_max_body_bytes, defaults.http_max_records, defaults.http_max_url_bytes,
            defaults.http_max_header_bytes, defaults.http_max_problems) == (10 * 1024 * 1024, 1000, 8192, 65536, 100)
    assert (defaults.http_connection_limit, defaults.http_channel_timeout_s, defaults.api_statement_timeout_ms,
            defaults.api_max_search_values, defaults.api_max_search_repeats, defaults.api_max_offset) == (
        1000, 30, 30_000, 100, 10, 10_000)
    set_ = load_settings({"FORLOP_HTTP_MAX_RECORDS": "5", "FORLOP_API_STATEMENT_TIMEOUT_MS": "0",
                          "FORLOP_HTTP_CONNECTION_LIMIT": "20"})
    assert (set_.http_max_records, set_.api_statement_timeout_ms, set_.http_connection_limit) == (5, 0, 20)
