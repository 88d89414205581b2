"""A clone is all a user needs: no file in the repository refers to a path outside it.

Checked over every file of the repository: relative paths (`../x`) that climb out of the repository from
the file's folder, Python that climbs above the root with `Path(__file__).parents[N]` or
`.parent` chains, and the name of the folder that sat beside the repository in development.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]*)")
PARENTS = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?(\.parents\[(\d+)\]|(?:\.parent(?!s))+)")
# The folder that sat beside the repository in development, spelt in two parts: this file names it
# only to catch it, and a search of the repository for the name should find no file.
BESIDE_NAME = "sh" + "ared"
BESIDE = re.compile(rf"""\.\./{BESIDE_NAME}|parent\s*/\s*["']{BESIDE_NAME}["']|parents\[\d+\]\s*/\s*["']{BESIDE_NAME}["']""")


SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".import_linter_cache",
             "build", "node_modules"}


def _repository_files() -> list[Path]:
    """Every file of the repository (CI runs in a copy without .git), less virtualenvs and caches."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [Path(folder, n) for n in names]
    return files


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", "replace")


def outside_references(path: Path, text: str) -> list[str]:
    """What in `text` (the content of `path`) points outside the repository."""
    found = [m.group(0) for m in BESIDE.finditer(text)]
    for m in RELATIVE.finditer(text):
        target = (path.parent / (m.group(1) + m.group(2))).resolve()
        if not target.is_relative_to(ROOT):
            found.append(m.group(0))
    if path.suffix == ".py":
        depth = len(path.relative_to(ROOT).parts) - 1  # parents of the file still inside the root
        for m in PARENTS.finditer(text):
            up = int(m.group(2)) if m.group(2) is not None else m.group(1).count(".parent") - 1
            if up > depth:
                found.append(m.group(0))
    return found


def test_no_file_refers_to_a_path_outside_the_repository() -> None:
    offenders = {}
    for path in _repository_files():
        if path == Path(__file__).resolve():  # its own examples of what it catches
            continue
        text = _text(path)
        if text is not None and (refs := outside_references(path, text)):
            offenders[str(path.relative_to(ROOT))] = refs
    assert not offenders, f"files referring outside the repository: {offenders}"


@pytest.mark.parametrize(("where", "text"), [
    ("tests/x.py", f'SHARED = ROOT.parent / "{BESIDE_NAME}"'),
    ("README.md", f"copy it from ../{BESIDE_NAME}/xsd"),
    ("docs/x.md", "see ../../elsewhere/file.md"),
    ("services/a/b.py", "Path(__file__).resolve().parents[3] / 'data'"),
    ("tests/x.py", "Path(__file__).parent.parent.parent"),
])
def test_the_check_catches_each_way_out(where: str, text: str) -> None:
    assert outside_references(ROOT / where, text)


@pytest.mark.parametrize(("where", "text"), [
    ("docs/x.md", "see ../README.md"),
    ("services/a/b.py", "Path(__file__).resolve().parents[2] / 'profiles'"),
    ("tests/x.py", "Path(__file__).resolve().parents[1]"),
])
def test_references_inside_are_fine(where: str, text: str) -> None:
    assert not outside_references(ROOT / where, text)
