"""The Dockerfile at the root: multi-stage, slim base, numeric non-root user, `forlop` as entrypoint,
and every service the chart runs is a `forlop serve` choice."""

from __future__ import annotations

import argparse
import json
import re
import shlex

import pytest
import yaml
from chartkit import CHART, ROOT

from app.cli import build_parser

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments and heredoc bodies dropped."""
    out: list[tuple[str, str]] = []
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    current = ""
    heredoc: str | None = None
    for line in lines:
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if line.rstrip().endswith("\\"):
            continue
        m = re.search(r"<<-?'?(\w+)'?", current)
        if m:
            heredoc = m.group(1)
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def serve_choices() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    (service,) = [a for a in serve._actions if a.dest == "service"]
    return list(service.choices)


def test_multi_stage_from_a_slim_python_base() -> None:
    steps = instructions()
    froms = [args for kw, args in steps if kw == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    for f in froms:
        image = f.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.match(r"python:3\.11-slim", image), image
    # the runtime stage copies the built environment from the build stage
    assert any(kw == "COPY" and "--from=build" in a for kw, a in steps)


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [args for kw, args in instructions() if kw == "USER"]
    assert users, "the image must switch to a non-root user"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) >= 10000, (
        "numeric UID, so runAsNonRoot can be verified by the kubelet"
    )
    assert not group or (group.isdigit() and int(group) > 0)
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["runAsUser"] == int(user)


def test_entrypoint_is_forlop_and_the_commands_exist() -> None:
    steps = instructions()
    (entrypoint,) = [exec_form(a) for kw, a in steps if kw == "ENTRYPOINT"]
    assert entrypoint == ["forlop"]
    cmd = [exec_form(a) for kw, a in steps if kw == "CMD"][-1]
    build_parser().parse_args(cmd)  # the default command parses
    for command in (["migrate"], ["serve", "api"]):
        build_parser().parse_args(command)


def test_every_chart_service_is_a_serve_choice() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    choices = serve_choices()
    assert set(values["services"]) <= set(choices), (
        f"not a `forlop serve` choice: {set(values['services']) - set(choices)}"
    )
    from app.serve import SERVICES

    assert set(choices) == set(SERVICES)


def test_data_dir_is_under_writable_tmp() -> None:
    env = " ".join(a for kw, a in instructions() if kw == "ENV")
    assert "FORLOP_DATA_DIR=/tmp/forlop" in env
    assert "HOME=/tmp" in env


@pytest.mark.parametrize("needed", ["pyproject.toml", "forlop/", "services/", "app/", "profiles/"])
def test_dockerignore_keeps_the_sources(needed: str) -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "**" in ignore, "allow-list: everything else stays out of the build context"
    assert any(line.startswith(f"!{needed.rstrip('/')}") for line in ignore), needed
    assert not any(line.strip() in (".venv", "!.venv") for line in ignore if line.startswith("!"))


def test_the_lock_file_agrees_with_the_pins_and_has_hashes():
    """The image installs requirements.lock by hash: it must hold exactly pyproject's pins."""
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (ROOT / "requirements.lock").read_text()
    locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", lock, re.M))
    norm = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in locked.items()}
    for pin in pins:
        name, version = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", pin).groups()
        assert norm.get(re.sub(r"[-_.]+", "-", name).lower()) == version, f"{pin} not locked"
    assert len(re.findall(r"^    --hash=sha256:[0-9a-f]{64}$", lock, re.M)) == len(locked)


def test_the_image_gets_no_development_tool_and_no_bundled_broker() -> None:
    """The development package (devtools/) and the `embedded` extra (the bundled broker) stay out."""
    steps = instructions()
    copied = [exec_form(a)[0] for kw, a in steps if kw == "COPY" and "--from" not in a]
    assert "app" in copied and not any(c.startswith(("devtools", "tests", "tools")) for c in copied), copied
    installs = " ".join(a for kw, a in steps if kw == "RUN" and "pip install" in a)
    assert not re.search(r"pip install[^&;]*\s\.\[", installs), "no extra of forlop is installed into the image"
    assert "devtools" not in installs
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert not any(line.startswith(("!devtools", "!tests", "!tools")) for line in ignore)
    assert "calfkit" not in (ROOT / "requirements.lock").read_text().lower()
