"""`_include` and `_revinclude`: the resources a page refers to, or that refer to it, in the same Bundle.

A worklist asks for Tasks and gets their EpisodeOfCare, Patient and unit in the same answer instead
of one request per Task. Supported (and so claimed by the CapabilityStatement):

- `_include`: Task:focus, Task:patient, Task:owner, EpisodeOfCare:patient, EpisodeOfCare:organization,
  each also with its target type (`Task:focus:EpisodeOfCare`) when that is one the parameter may
  name; only on a search of the parameter's own type.
- `_revinclude`: Task:focus (the Tasks of the EpisodeOfCares on the page).

Anything else (`*`, `:iterate`, another parameter) is a BadParameter naming it. Included resources
get `search.mode: include`; one that is also a match is given once, as a match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from forlop.http import BadParameter, shown

# (source type, search parameter) -> the element of the source holding the reference
INCLUDES: dict[tuple[str, str], str] = {
    ("Task", "focus"): "focus",
    ("Task", "patient"): "for",
    ("Task", "owner"): "owner",
    ("EpisodeOfCare", "patient"): "patient",
    ("EpisodeOfCare", "organization"): "managingOrganization",
}
REVINCLUDES: tuple[tuple[str, str], ...] = (("Task", "focus"),)
# the types each included reference may name (FHIR R4's targets, of the types served here)
TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "focus"): ("EpisodeOfCare", "Task", "Patient", "Organization", "Practitioner"),
    ("Task", "patient"): ("Patient",),
    ("Task", "owner"): ("Organization", "Patient", "Practitioner"),
    ("EpisodeOfCare", "patient"): ("Patient",),
    ("EpisodeOfCare", "organization"): ("Organization",),
}


@dataclass(frozen=True, slots=True)
class Include:
    source: str  # the resource type holding the reference
    param: str
    target: str | None  # only references to this type (None: any)

    @property
    def name(self) -> str:
        return f"{self.source}:{self.param}" + (f":{self.target}" if self.target else "")


def includes(resource_type: str, values: Sequence[str]) -> list[Include]:
    """The `_include` values of a search of `resource_type`, checked."""
    return [_parse("_include", resource_type, v, INCLUDES, own_type=True) for v in _distinct("_include", values)]


def revincludes(resource_type: str, values: Sequence[str]) -> list[Include]:
    """The `_revinclude` values of a search of `resource_type`, checked (the target, when named, is it)."""
    found = [_parse("_revinclude", resource_type, v, dict.fromkeys(REVINCLUDES, ""), own_type=False)
             for v in _distinct("_revinclude", values)]
    for inc in found:
        if resource_type not in TARGETS[(inc.source, inc.param)] or inc.target not in (None, resource_type):
            raise BadParameter("_revinclude", f"_revinclude={shown(inc.name)}: {inc.source}.{inc.param} does not "
                               f"refer to {resource_type} here", "not-supported")
    return found


def _distinct(name: str, values: Iterable[str]) -> list[str]:
    pieces = [v for value in values for v in value.split(",")]
    if not all(pieces):  # `_include=` names nothing: refused like any other empty value, never ignored
        raise BadParameter(name, f"{name} needs a value (e.g. {name}=Task:focus)")
    return list(dict.fromkeys(pieces))


def _parse(name: str, resource_type: str, value: str, supported: dict[tuple[str, str], str], *,
           own_type: bool) -> Include:
    parts = value.split(":")
    listed = ", ".join(f"{s}:{p}" for s, p in supported)
    if len(parts) not in (2, 3) or (parts[0], parts[1]) not in supported:
        raise BadParameter(name, f"{name}={shown(value)} is not supported; supported: {listed} "
                           "(not *, nor :iterate)", "not-supported")
    inc = Include(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
    if own_type and inc.source != resource_type:
        raise BadParameter(name, f"{name}={shown(value)} names {inc.source}'s parameter on a {resource_type} "
                           "search", "not-supported")
    if inc.target is not None and inc.target not in TARGETS[(inc.source, inc.param)]:
        raise BadParameter(name, f"{name}={shown(value)}: {inc.source}.{inc.param} never refers to "
                           f"{shown(inc.target)}", "not-supported")
    return inc


def referenced(resources: Iterable[dict[str, Any]], wanted: Sequence[Include]) -> list[tuple[str, str]]:
    """(type, id) of what the resources refer to by the included parameters, each once, in order."""
    out: dict[tuple[str, str], None] = {}
    for res in resources:
        for inc in wanted:
            if inc.source != res["resourceType"]:
                continue
            ref = (res.get(INCLUDES[(inc.source, inc.param)]) or {}).get("reference", "")
            rtype, _, rid = ref.partition("/")
            if rid and "/" not in rid and (inc.target is None or rtype == inc.target):
                out[(rtype, rid)] = None
    return list(out)
