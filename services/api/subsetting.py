"""`_summary` and `_elements`: a resource cut down to some of its elements, tagged SUBSETTED.

`_summary=true` keeps the elements FHIR marks as summary elements (isSummary in the base
definition: the fhir.resources models' `summary_element_property`), `_elements=a,b` the named
top-level elements. Both keep `resourceType`, `id`, `meta` and the mandatory elements, so a subset
is still a valid resource, and add the SUBSETTED tag to `meta.tag` (FHIR R4 search, "Summary"), by
which a client knows not to store it as the whole resource. `_summary=count` is the total alone
(`_count=0`), `false` and `data` the whole resource (forlop serves no narrative); `text` is refused.
Given together, `_summary=true` and `_elements` keep the summary elements and the named ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import Any

from forlop.http import BadParameter, shown

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
SUMMARY_MODES = ("true", "false", "count", "data")  # `text`: no narrative to give
ALWAYS = ("resourceType", "id", "meta")
# 1..1 elements of the served types (FHIR R4): a subset keeps them, so it is still a valid resource
MANDATORY: dict[str, tuple[str, ...]] = {"EpisodeOfCare": ("status", "patient"), "Task": ("status", "intent")}


@cache
def _fields(resource_type: str) -> dict[str, bool]:
    """The resource type's top-level element names (JSON names), each with whether it is a summary one."""
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)
    out = {}
    for name, info in model.model_fields.items():
        json_name = info.alias or name
        if json_name.startswith("_") or name == "fhir_comments":  # a primitive's extension, a comment
            continue
        out[json_name] = bool((info.json_schema_extra or {}).get("summary_element_property"))
    return out


def element_pattern(resource_type: str) -> str:
    """A regular expression of the `_elements` values the type takes (the OpenAPI document states it)."""
    names = "|".join(sorted(_fields(resource_type)))
    return f"^({names})(,({names}))*$"


def summary_mode(raw: str | None) -> str | None:
    """The `_summary` value, checked; None when absent."""
    if raw is None:
        return None
    if raw not in SUMMARY_MODES:
        raise BadParameter("_summary", f"_summary={shown(raw)}: supported are {', '.join(SUMMARY_MODES)} "
                           "(text: forlop serves no narrative)", "not-supported")
    return raw


def element_names(resource_type: str, raw: str | None) -> tuple[str, ...] | None:
    """The `_elements` names, each an element of the type (else a BadParameter naming it); None when absent."""
    if raw is None:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:
        raise BadParameter("_elements", "_elements names no element")
    known = _fields(resource_type)
    for name in names:
        if name not in known:
            raise BadParameter("_elements", f"_elements: {shown(name)} is not an element of {resource_type} "
                               "(top-level element names only)")
    return names


def summarised(resource: dict[str, Any], also: Iterable[str] = ()) -> dict[str, Any]:
    """The resource with its summary elements only (the mandatory ones and `also` besides), tagged SUBSETTED."""
    fields = _fields(resource["resourceType"])
    return _kept(resource, [*(name for name, is_summary in fields.items() if is_summary), *also])


def with_elements(resource: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The resource with the named elements only (and the mandatory ones), tagged SUBSETTED."""
    return _kept(resource, names)


def _kept(resource: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    keep = {*ALWAYS, *MANDATORY.get(resource["resourceType"], ()), *names}
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out
