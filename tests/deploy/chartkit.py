"""Render the chart with Helm's own engine (helm-python-sdk binds Helm's Go SDK: no helm binary)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "forlop"
PRODUCTION_VALUES = CHART / "values-production.yaml"
SKIPS_FILE = ROOT / "deploy" / "helm" / "checkov-skips.yaml"
RELEASE = "forlop"
NAMESPACE = "forlop"


@dataclass
class Rendered:
    """One render of the chart: the manifests as text (for checkov) and as objects."""

    name: str  # "default" or "production"
    values: dict[str, Any]
    text: str
    objects: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every pod spec the chart creates: Deployments, Jobs and bare Pods."""
        for o in self.objects:
            label = f"{o['kind']}/{o['metadata']['name']}"
            if o["kind"] in ("Deployment", "Job"):
                yield label, o["spec"]["template"]["spec"]
            elif o["kind"] == "Pod":
                yield label, o["spec"]


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Render with the chart's schema and templates; raises HelmValuesError / HelmRenderError."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def rendered(name: str, values: dict[str, Any]) -> Rendered:
    manifests = render(values)
    parts = [
        f"# Source: {path}\n{text.strip()}\n"
        for path, text in sorted(manifests.items())
        if text.strip() and not path.endswith("NOTES.txt")
    ]
    text = "---\n".join(parts)
    objects = [o for o in yaml.safe_load_all(text) if o]
    return Rendered(name, values, text, objects)


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
