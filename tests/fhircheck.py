"""A second, independent check of what the API serves: the official FHIR R4 (4.0.1) JSON schema and the
strict R4 models of the SMART on FHIR client (fhirclient), beside the project's own fhir.resources check.

The schema ships gzipped in profiles/fhir/schema (its README names the source, version, licence and
sha256). Both are FHIR 4.0.1, the version the CapabilityStatement claims.
"""

from __future__ import annotations

import gzip
import importlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from fhirclient.models import fhirelementfactory
from jsonschema import Draft6Validator
from pydantic import ValidationError

SCHEMA = Path(__file__).resolve().parents[1] / "profiles" / "fhir" / "schema" / "fhir.schema.json.gz"


@cache
def schema() -> dict[str, Any]:
    with gzip.open(SCHEMA, "rt", encoding="utf-8") as f:
        return json.load(f)


@cache
def _validator(resource_type: str) -> Draft6Validator:
    """A validator of one resource type's definition (the whole schema's oneOf over every type, for each
    resource of a Bundle, would try each of the 146 types): the same definitions, entered at the type."""
    whole = schema()
    root = {**whole, "$ref": f"#/definitions/{resource_type}"}
    root.pop("oneOf", None)
    root.pop("discriminator", None)
    return Draft6Validator(root)


def schema_problems(resource: dict[str, Any]) -> list[str]:
    """What the official R4 schema finds wrong with `resource` (a Bundle's resources each by their own
    type, its other elements by Bundle's definition); [] when it is valid."""
    rtype = resource.get("resourceType")
    if rtype not in schema()["discriminator"]["mapping"]:
        return [f"resourceType {rtype!r} is not an R4 resource type"]
    problems = []
    if rtype == "Bundle":
        for i, entry in enumerate(resource.get("entry", [])):
            if "resource" in entry:
                problems += [f"entry[{i}].resource: {p}" for p in schema_problems(entry["resource"])]
        resource = {**resource, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                          for e in resource.get("entry", [])]}
    for err in _validator(rtype).iter_errors(resource):
        where = "/".join(str(p) for p in err.absolute_path)
        problems.append(f"{rtype} {where or '(root)'}: {err.message[:300]}")
    return problems


def model_problems(resource: dict[str, Any]) -> list[str]:
    """What fhirclient's strict R4 (4.0.1) models refuse in `resource` (a Bundle with its entries)."""
    try:
        fhirelementfactory.FHIRElementFactory.instantiate(resource["resourceType"], resource)
    except Exception as exc:  # FHIRValidationError lists every problem; anything else is one too
        return [f"{resource.get('resourceType')}: {exc}"]
    return []


def r4b_problems(resource: dict[str, Any]) -> list[str]:
    """What the project's own models (fhir.resources R4B, which has no R4 module) refuse in `resource`."""
    rtype = resource["resourceType"]
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [f"{rtype} (R4B model): {err['loc']}: {err['msg']}" for err in exc.errors()]
    return []


def assert_valid_r4(body: dict[str, Any]) -> None:
    """Fail unless `body` (a resource or Bundle as served) is valid by the 4.0.1 schema and models, and
    the project's own R4B models agree."""
    problems = schema_problems(body) + model_problems(body) + r4b_problems(body)
    assert not problems, "\n".join(problems[:20])
