"""The command line as an operator uses it: replay, export, status, token, generate."""

from __future__ import annotations

import json

import jwt

from app import cli

AS_OF = "2026-01-05T10:00:00+01:00"


def test_replay_export_and_status(tmp_path, monkeypatch, capsys, contracts_dir):
    monkeypatch.setenv("FORLOP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FORLOP_XSD_DIR", raising=False)  # the shipped schemas
    examples = contracts_dir
    n = len(examples.joinpath("dips-examples.ndjson").read_text().splitlines())

    assert cli.main(["replay", "--source", "dips", str(examples / "dips-examples.ndjson"), "--as-of", AS_OF]) == 0
    first = capsys.readouterr()
    assert f"{n} accepted, 0 duplicate, 0 rejected" in first.out
    assert "%" in first.err  # the progress bar
    assert cli.main(["replay", "--source", "dips", str(examples / "dips-examples.ndjson"), "--as-of", AS_OF]) == 0
    assert f"0 accepted, {n} duplicate, 0 rejected" in capsys.readouterr().out

    out = tmp_path / "bundle.json"
    assert cli.main(["export", "fhir", "--as-of", AS_OF, "--out", str(out)]) == 0
    bundle = json.loads(out.read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"EpisodeOfCare", "Task", "Patient", "Organization", "Practitioner"} <= kinds
    episodes = {e["resource"]["identifier"][0]["value"]: e["resource"]["status"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "EpisodeOfCare"}
    assert episodes == {"PPR-1810111": "active", "PPR-4745328": "active", "PPR-6175466": "finished"}
    capsys.readouterr()

    # the same export to stdout, earlier in time: the PHV pathway was still on the waitlist
    assert cli.main(["export", "fhir", "--as-of", "2025-10-10"]) == 0
    early = json.loads(capsys.readouterr().out)
    status = {e["resource"]["identifier"][0]["value"]: e["resource"]["status"] for e in early["entry"]
              if e["resource"]["resourceType"] == "EpisodeOfCare"}
    assert status["PPR-1810111"] == "waitlist"

    assert cli.main(["status", "PPR-4745328", "--as-of", "2025-11-20T10:00:00+01:00"]) == 0
    timeline = capsys.readouterr().out
    assert "decision-basic" in timeline and "met-adjusted" in timeline and "overdue" in timeline
    assert cli.main(["status", "no-such-pathway"]) == 1


def test_token_is_a_dev_jwt_with_the_scopes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    assert cli.main(["token", "--scope", "forlop/fhir.read"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert "forlop/fhir.read" in (claims.get("scope") or "")


def test_a_bad_setting_stops_with_its_name(monkeypatch, capsys):
    monkeypatch.setenv("FORLOP_TOPIC_PARTITIONS", "many")
    assert cli.main(["migrate"]) == 2
    assert "FORLOP_TOPIC_PARTITIONS" in capsys.readouterr().err


def test_replay_connections_get_the_page_cache_asked_for(tmp_path):
    from forlop.storage import Store

    sized = Store(f"sqlite:///{tmp_path / 'c.db'}", sqlite_cache_mb=64)
    plain = Store(f"sqlite:///{tmp_path / 'c.db'}")
    with sized.transaction() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -64 * 1024
    with plain.transaction() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -2000  # SQLite's default


def _commands(parser) -> set[str]:  # noqa: ANN001 - an argparse parser
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_the_development_commands_come_from_the_entry_point_group(monkeypatch):
    """`run`, `generate` and `bench` are the development package's (entry-point group forlop.commands):
    present where it is installed (here), absent in the image, where no package adds to the group."""
    product = {"serve", "migrate", "replay", "export", "dlq", "token", "status", "messages", "indicators", "quality",
               "audit"}
    assert _commands(cli.build_parser()) == product | {"run", "generate", "bench"}
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    assert _commands(cli.build_parser()) == product


def test_generate_through_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FORLOP_DATA_DIR", str(tmp_path))
    out = tmp_path / "events.ndjson"
    assert cli.main(["generate", "--vendor", "esp", "--pathways", "3", "--seed", "4", "--as-of",
                     "2026-01-05T10:00:00+01:00", "--out", str(out)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert events and all("meldingsId" in e for e in events)
