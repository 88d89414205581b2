"""The tenant registry (FORLOP_TENANTS): which organisation may do what, by its organisation number.

A token names its organisation with HelseID's claims (`forlop.auth.Principal.org_child`, else
`org_parent`); the registry maps that number to a tenant:

- hospital: posts events for its own units only (by HER-id) and reads the pathways at them;
- municipality: reads the pathways of its residents whose consent to municipal involvement is in force;
- national: the indicators and the registration quality over all pathways, small cells suppressed;
- operator: the e-messages and dead letters (with the `forlop/admin` scope), the audit trail (with
  `forlop/audit.read`);
- development: everything; embedded mode only (a production registry holding one is refused).

The registry is a YAML or JSON file checked against `profiles/tenants/tenants.schema.json` at start;
a bad one stops the process with a message naming the entry. Unset, embedded mode uses the demo
registry `profiles/tenants/demo.yaml`. Which rows a tenant reaches is decided in the query
(`Reach`, turned into SQL by the pathway service), never by filtering an answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from forlop.config import ConfigError, Settings

HOSPITAL, MUNICIPALITY, NATIONAL, OPERATOR, DEVELOPMENT = "hospital", "municipality", "national", "operator", "development"
KINDS = (HOSPITAL, MUNICIPALITY, NATIONAL, OPERATOR, DEVELOPMENT)
DEMO_REGISTRY = "demo.yaml"
# The organisation plain `forlop token` names: the demo registry's development tenant.
DEVELOPMENT_ORG_NUMBER = "999999999"


@dataclass(frozen=True, slots=True)
class Reach:
    """The pathways a tenant may read, as the query restricts them: at these units (a hospital), or
    residents of this municipality whose consent to municipal involvement is in force."""

    units: tuple[str, ...] | None = None
    municipality: str | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    org_number: str
    kind: str
    name: str | None = None
    units: frozenset[str] = frozenset()
    municipality: str | None = None

    @property
    def reach(self) -> Reach | None:
        """What its FHIR reads reach: None, every pathway (development); else a `Reach`."""
        if self.kind == DEVELOPMENT:
            return None
        if self.kind == HOSPITAL:
            return Reach(units=tuple(sorted(self.units)))
        if self.kind == MUNICIPALITY:
            return Reach(municipality=self.municipality)
        return Reach(units=())  # reads nothing (the routes refuse it before)

    @property
    def everything(self) -> bool:
        return self.kind == DEVELOPMENT

    def describe(self) -> str:
        return f"organisation {self.org_number} ({self.kind}{', ' + self.name if self.name else ''})"


@dataclass(frozen=True)
class TenantRegistry:
    tenants: dict[str, Tenant]
    source: str

    def find(self, *org_numbers: str | None) -> Tenant | None:
        """The first of `org_numbers` the registry holds (a token's child unit, then its legal entity)."""
        for org in org_numbers:
            if org and org in self.tenants:
                return self.tenants[org]
        return None


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads((resources.files("profiles") / "tenants" / "tenants.schema.json").read_text())


def parse_registry(text: str, source: str, *, production: bool) -> TenantRegistry:
    """A registry from its YAML or JSON text (JSON is YAML); ConfigError naming the problem and entry."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"FORLOP_TENANTS={source}: not YAML or JSON: {exc}") from None
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        shown = "; ".join(f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])
        raise ConfigError(f"FORLOP_TENANTS={source} does not match the tenant registry's schema: {shown}")
    tenants: dict[str, Tenant] = {}
    for i, entry in enumerate(doc["tenants"]):
        org = entry["orgNumber"]
        if org in tenants:
            raise ConfigError(f"FORLOP_TENANTS={source}: tenants/{i}: organisation {org} is listed twice")
        if production and entry["kind"] == DEVELOPMENT:
            raise ConfigError(f"FORLOP_TENANTS={source}: tenants/{i}: kind development (every pathway, every "
                              "route) exists in embedded mode only")
        tenants[org] = Tenant(org, entry["kind"], entry.get("name"), frozenset(entry.get("units") or ()),
                              entry.get("municipality"))
    return TenantRegistry(tenants, source)


def load_tenants(settings: Settings) -> TenantRegistry:
    """The registry FORLOP_TENANTS names, or (embedded mode only) the demo registry."""
    if settings.tenants_file:
        path = Path(settings.tenants_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"FORLOP_TENANTS={settings.tenants_file!r} cannot be read: {exc.strerror}") from None
        return parse_registry(text, str(path), production=settings.production)
    if settings.production:
        raise ConfigError("FORLOP_TENANTS is required in production (the tenant registry)")
    text = (resources.files("profiles") / "tenants" / DEMO_REGISTRY).read_text(encoding="utf-8")
    return parse_registry(text, f"profiles/tenants/{DEMO_REGISTRY}", production=False)
