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
    ],
)
def test_bad_setting_fails_naming_it(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_cli_reports_a_bad_setting_and_exits_2(monkeypatch, capsys):
    from forlop.cli import main

    monkeypatch.setenv("FORLOP_KAFKA_BOOTSTRAP", "nohostport")
    assert main(["migrate"]) == 2
    assert "FORLOP_KAFKA_BOOTSTRAP" in capsys.readouterr().err
