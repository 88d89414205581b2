"""The tenant registry in the chart, and what production requires before forlop may start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from chartkit import CHART, ROOT, Rendered

from forlop.config import check_production, load_settings
from forlop.tenants import parse_registry


def _api(r: Rendered) -> dict[str, Any]:
    (d,) = [d for d in r.kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "api"]
    return d["spec"]["template"]["spec"]


def test_the_registry_is_a_configmap_mounted_on_the_api_only(production_render: Rendered) -> None:
    cm = production_render.one("ConfigMap", "forlop-tenants")
    registry = parse_registry(cm["data"]["tenants.yaml"], "chart", production=True)
    assert {t.kind for t in registry.tenants.values()} >= {"hospital", "municipality", "national"}
    spec = _api(production_render)
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["FORLOP_TENANTS"] == "/etc/forlop/tenants/tenants.yaml"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tenants")
    assert mount == {"name": "tenants", "mountPath": "/etc/forlop/tenants", "readOnly": True}
    volume = next(v for v in spec["volumes"] if v["name"] == "tenants")
    assert volume["configMap"]["name"] == "forlop-tenants"
    # a changed registry rolls the API (it reads the file at start)
    assert "checksum/tenants" in production_render.one("Deployment", "forlop-api")["spec"]["template"]["metadata"][
        "annotations"]
    for d in production_render.kind("Deployment"):
        if d["metadata"]["name"] != "forlop-api":
            (other,) = d["spec"]["template"]["spec"]["containers"]
            assert not any(e["name"] == "FORLOP_TENANTS" for e in other.get("env", [])), d["metadata"]["name"]


def test_by_default_an_existing_configmap_is_mounted(default_render: Rendered) -> None:
    assert not [c for c in default_render.kind("ConfigMap") if c["metadata"]["name"].endswith("-tenants")]
    volume = next(v for v in _api(default_render)["volumes"] if v["name"] == "tenants")
    assert volume["configMap"]["name"] == "forlop-tenants"


def test_the_chart_schema_checks_the_registry_as_forlop_does() -> None:
    """values.schema.json holds profiles/tenants/tenants.schema.json for tenants.registry: the two agree."""
    values_schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    own = json.loads((ROOT / "profiles" / "tenants" / "tenants.schema.json").read_text(encoding="utf-8"))
    in_chart = values_schema["properties"]["tenants"]["properties"]["registry"]["anyOf"][1]
    assert in_chart == {k: v for k, v in own.items() if k not in ("$schema", "$id")}


def test_production_values_carry_every_setting_forlop_requires(production_render: Rendered, tmp_path: Path) -> None:
    """The rendered API container, its Secrets filled in, passes forlop's production start-up check."""
    (cm,) = [c for c in production_render.kind("ConfigMap") if c["metadata"]["name"] == "forlop"]
    env: dict[str, str] = dict(cm["data"])
    env.pop("FORLOP_XSD_DIR", None)
    (c,) = _api(production_render)["containers"]
    registry = tmp_path / "tenants.yaml"
    registry.write_text(production_render.one("ConfigMap", "forlop-tenants")["data"]["tenants.yaml"])
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:  # a Secret's value: any non-empty text stands in for it
            env[e["name"]] = {"FORLOP_JWT_JWKS_URL": "https://helseid.example/jwks",
                              "FORLOP_DATABASE_URL": "postgresql://forlop:x@db.example/forlop"}.get(e["name"], "secret")
    env["FORLOP_TENANTS"] = str(registry)
    check_production(load_settings(env), "api")  # raises ConfigError naming what is missing


def test_values_production_documents_its_secrets() -> None:
    text = (CHART / "values-production.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    for secret in (values["patientIds"]["existingSecret"], values["logMasking"]["existingSecret"],
                   values["jwt"]["existingSecret"]):
        assert f"#   {secret} " in text, secret
