"""The search index of a FHIR resource, worked out from its JSON alone: which (parameter, value) rows
a resource gets, and what a reference parameter's values match. Pure: the repository writes these
rows, the search query builder reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# The types a pathway owns (its pathway_key column is set); the others are shared between pathways.
OWNED_TYPES = ("EpisodeOfCare", "Task")

# The search parameters the API supports, per resource type (the CapabilityStatement says the same).
SEARCH_PARAMS: dict[str, tuple[str, ...]] = {
    "EpisodeOfCare": ("identifier", "patient", "patient.identifier", "status", "type", "organization"),
    "Task": ("focus", "patient", "status", "code", "business-status", "owner"),
    "Patient": ("identifier",),
    "Organization": ("identifier",),
    "Practitioner": ("identifier",),
}


def _tokens(codings: Iterable[dict[str, Any]] | None) -> list[str]:
    out: list[str] = []
    for c in codings or []:
        value = c.get("value", c.get("code"))
        if value is None:
            continue
        out.append(str(value))
        if c.get("system"):
            out.append(f"{c['system']}|{value}")
    return out


# The reference search parameters and the types a bare id may name (FHIR R4's targets of each,
# of the types served here). The index holds a reference in its "Type/id" form only (a second
# row per reference for the bare id was a quarter of all index rows); a search by a bare id asks
# for "Type/id" of each target type instead.
REFERENCE_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("EpisodeOfCare", "patient"): ("Patient",),
    ("EpisodeOfCare", "organization"): ("Organization",),
    ("Task", "focus"): tuple(SEARCH_PARAMS),  # Reference(Any)
    ("Task", "patient"): ("Patient",),
    ("Task", "owner"): ("Organization", "Patient", "Practitioner"),
}


def _ref(reference: dict[str, Any] | None) -> list[str]:
    if not reference or "reference" not in reference:
        return []
    return [reference["reference"]]


def reference_values(resource_type: str, param: str, values: Sequence[str]) -> list[str]:
    """What a reference parameter's values match in the index: a bare id as "Type/id" of each target
    type, an absolute URL as its last "Type/id"; other parameters' values as given."""
    targets = REFERENCE_TARGETS.get((resource_type, param))
    if targets is None:
        return list(values)
    out: list[str] = []
    for value in values:
        parts = value.rstrip("/").split("/")
        if len(parts) == 1:
            out += [f"{t}/{value}" for t in targets]
        else:
            out.append("/".join(parts[-2:]))  # Type/id as it is; of a URL, its Type/id
    return out


def index_values(resource: dict[str, Any], patients: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(param, value) pairs to index for one resource. `patients` resolves chained patient.identifier."""
    rtype = resource["resourceType"]
    pairs: list[tuple[str, str]] = []

    def add(param: str, values: Iterable[str]) -> None:
        pairs.extend((param, v) for v in values)

    if rtype == "EpisodeOfCare":
        add("identifier", _tokens(resource.get("identifier")))
        add("patient", _ref(resource.get("patient")))
        patient = patients.get(resource.get("patient", {}).get("reference", ""))
        if patient:
            add("patient.identifier", _tokens(patient.get("identifier")))
        add("status", [resource["status"]])
        for t in resource.get("type", []):
            add("type", _tokens(t.get("coding")))
        add("organization", _ref(resource.get("managingOrganization")))
    elif rtype == "Task":
        add("focus", _ref(resource.get("focus")))
        add("patient", _ref(resource.get("for")))
        add("status", [resource["status"]])
        add("code", _tokens(resource.get("code", {}).get("coding")))
        add("business-status", _tokens(resource.get("businessStatus", {}).get("coding")))
        add("owner", _ref(resource.get("owner")))
    else:
        add("identifier", _tokens(resource.get("identifier")))
    return sorted(set(pairs))
