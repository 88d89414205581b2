"""Check a produced resource against forlop's own profiles (``profiles/fhir``).

Reads the profile's ``differential`` and checks, generically over the element ids it
finds: minimum and maximum cardinality, fixed values (``fixed[x]``) and patterns
(``pattern[x]``), required bindings (the code must be in the ValueSet expanded from our
CodeSystems; an extensible binding checks codes of the systems the ValueSet draws from),
choice types, reference targets, slicing by value (open and closed) and extensions by
their own StructureDefinition. It is not a full FHIR validator: base R4 structure is
checked by the ``fhir.resources`` R4B models, invariants (FHIRPath) are not evaluated.

An empty list means the resource conforms.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import ValidationError

from profiles.fhir import load_conformance

HL7_SD = "http://hl7.org/fhir/StructureDefinition/"


class UnsupportedProfile(ValueError):
    """The profile uses a construct this checker does not evaluate: fail loudly, never pass silently."""


@dataclass
class _Registry:
    resources: dict[str, dict[str, Any]]
    expansions: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)

    def get(self, url: str, resource_type: str) -> dict[str, Any] | None:
        res = self.resources.get(url.split("|", 1)[0])
        return res if res is not None and res["resourceType"] == resource_type else None

    def profiles_for(self, resource_type: str) -> list[str]:
        return sorted(
            url
            for url, res in self.resources.items()
            if res["resourceType"] == "StructureDefinition"
            and res.get("kind") == "resource"
            and res.get("type") == resource_type
        )

    def expand(self, vs_url: str) -> frozenset[tuple[str, str]]:
        """(system, code) pairs of a ValueSet built from our CodeSystems (include/exclude, no filters)."""
        if vs_url not in self.expansions:
            vs = self.get(vs_url, "ValueSet")
            if vs is None:
                raise UnsupportedProfile(f"ValueSet {vs_url} is not among forlop's conformance resources")
            compose = vs.get("compose", {})
            included = set().union(*(self._part(vs_url, p) for p in compose.get("include", [])))
            excluded = set().union(*(self._part(vs_url, p) for p in compose.get("exclude", [])))
            self.expansions[vs_url] = frozenset(included - excluded)
        return self.expansions[vs_url]

    def _part(self, vs_url: str, part: dict[str, Any]) -> set[tuple[str, str]]:
        if part.get("filter"):
            raise UnsupportedProfile(f"ValueSet {vs_url}: compose filters are not supported")
        codes: set[tuple[str, str]] = set()
        system = part.get("system")
        if system and part.get("concept"):
            codes |= {(system, c["code"]) for c in part["concept"]}
        elif system:
            cs = self.get(system, "CodeSystem")
            if cs is None or cs.get("content") != "complete":
                raise UnsupportedProfile(
                    f"ValueSet {vs_url} includes all of {system}, which forlop does not hold completely"
                )
            codes |= {(system, code) for code in _all_codes(cs.get("concept", []))}
        for other in part.get("valueSet", []):
            nested = self.expand(other)
            codes = nested if not system and not codes else codes & nested
        return codes

    def systems_of(self, vs_url: str) -> set[str]:
        return {system for system, _ in self.expand(vs_url)}


def _all_codes(concepts: Iterable[dict[str, Any]]) -> Iterable[str]:
    for c in concepts:
        yield c["code"]
        yield from _all_codes(c.get("concept", []))


@cache
def _registry() -> _Registry:
    return _Registry(load_conformance())


def check_conformance(resource: dict[str, Any], profiles: Iterable[str] | None = None) -> list[str]:
    """Problems of `resource` against forlop's profiles; empty when it conforms.

    The profiles checked are `profiles` when given, else those the resource claims in
    ``meta.profile``. A resource of a type forlop profiles that claims none of them is a
    problem, and is then checked against forlop's profile(s) for its type anyway.
    """
    reg = _registry()
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return ["resourceType: missing"]
    problems = _base_problems(resource)
    if profiles is None:
        claimed = [
            u for u in resource.get("meta", {}).get("profile", []) if reg.get(u, "StructureDefinition")
        ]
        if not claimed:
            defaults = reg.profiles_for(rtype)
            if defaults:
                problems.append(
                    f"{rtype}.meta.profile: claims none of forlop's profiles; expected {defaults[0]}"
                )
            claimed = defaults
        profiles = claimed
    for url in profiles:
        sd = reg.get(url, "StructureDefinition")
        if sd is None:
            raise UnsupportedProfile(f"profile {url} is not among forlop's conformance resources")
        if sd["type"] != rtype:
            problems.append(f"{rtype}: profile {url} is a profile on {sd['type']}, not on {rtype}")
            continue
        problems.extend(_check(reg, sd, resource, rtype))
    return problems


def _base_problems(resource: dict[str, Any]) -> list[str]:
    """Base R4 structure and datatypes, by the fhir.resources R4B model of the resource type."""
    rtype = resource["resourceType"]
    try:
        module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
        model = getattr(module, rtype)
    except (ImportError, AttributeError):
        return [f"{rtype}: not a FHIR R4 resource type"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            f"{rtype}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (base R4)" for err in exc.errors()
        ]
    return []


# -- the differential walk ---------------------------------------------------------------------------------

Located = tuple[str, Any]  # (location in the instance, value)


def _check(reg: _Registry, sd: dict[str, Any], instance: dict[str, Any], root_location: str) -> list[str]:
    elements = sd.get("differential", {}).get("element", [])
    by_id = {e["id"]: e for e in elements}
    problems: list[str] = []
    for e in elements:
        segments = e["id"].split(".")
        if len(segments) == 1:
            continue  # the root element: cardinality of the resource itself is the caller's concern
        parents = _resolve(reg, by_id, segments[:-1], instance, root_location)
        for parent_location, parent in parents:
            children = _children(reg, by_id, ".".join(segments[:-1]), segments[-1], parent, parent_location)
            where = f"{parent_location}.{_name(segments[-1])}"
            slice_note = f" (slice {e['sliceName']})" if e.get("sliceName") else ""
            if isinstance(parent, dict) and len(children) < e.get("min", 0):
                problems.append(f"{where}{slice_note}: minimum cardinality {e['min']}, found {len(children)}")
            if e.get("max", "*") != "*" and len(children) > int(e["max"]):
                problems.append(f"{where}{slice_note}: maximum cardinality {e['max']}, found {len(children)}")
            for location, value in children:
                problems.extend(_check_value(reg, by_id, e, location, value))
    return problems


def _name(segment: str) -> str:
    return segment.split(":", 1)[0]


def _resolve(
    reg: _Registry, by_id: dict[str, Any], segments: list[str], instance: Any, root_location: str
) -> list[Located]:
    found: list[Located] = [(root_location, instance)]
    for i in range(1, len(segments)):
        parent_id = ".".join(segments[:i])
        found = [c for loc, v in found for c in _children(reg, by_id, parent_id, segments[i], v, loc)]
    return found


def _children(
    reg: _Registry, by_id: dict[str, Any], parent_id: str, segment: str, parent: Any, parent_location: str
) -> list[Located]:
    """The values at one path segment below `parent` (a slice name filters them)."""
    if not isinstance(parent, dict):
        return []
    name, _, slice_name = segment.partition(":")
    if name.endswith("[x]"):
        stem = name[:-3]
        keys = sorted(k for k in parent if k.startswith(stem) and k[len(stem) :][:1].isupper())
    else:
        keys = [name] if name in parent else []
    out: list[Located] = []
    for key in keys:
        value = parent[key]
        if isinstance(value, list):
            out.extend((f"{parent_location}.{key}[{i}]", v) for i, v in enumerate(value))
        else:
            out.append((f"{parent_location}.{key}", value))
    if slice_name:
        out = [(loc, v) for loc, v in out if _in_slice(by_id, f"{parent_id}.{name}", slice_name, v)]
    return out


def _in_slice(by_id: dict[str, Any], sliced_id: str, slice_name: str, value: Any) -> bool:
    sliced = by_id.get(sliced_id, {})
    slicing = sliced.get("slicing")
    if not slicing:
        raise UnsupportedProfile(
            f"{sliced_id}:{slice_name}: slice without a slicing definition on {sliced_id}"
        )
    slice_el = by_id[f"{sliced_id}:{slice_name}"]
    for disc in slicing.get("discriminator", []):
        if disc["type"] not in ("value", "pattern"):
            raise UnsupportedProfile(f"{sliced_id}: discriminator type {disc['type']!r} is not supported")
        path = disc["path"]
        profiles = [p for t in slice_el.get("type", []) for p in t.get("profile", [])]
        if path == "url" and profiles:
            expected: Any = profiles[0]  # an extension slice: its url is the extension's canonical url
        else:
            target = by_id.get(f"{sliced_id}:{slice_name}.{path}", {})
            fixed = [v for k, v in target.items() if k.startswith(("fixed", "pattern"))]
            if not fixed:
                raise UnsupportedProfile(
                    f"{sliced_id}:{slice_name}.{path}: no fixed value to discriminate on"
                )
            expected = fixed[0]
        actual = _get_path(value, path)
        if not (actual == expected if disc["type"] == "value" else _matches_pattern(actual, expected)):
            return False
    return True


def _get_path(value: Any, path: str) -> Any:
    for part in path.split("."):
        if part == "$this":
            continue
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _check_value(
    reg: _Registry, by_id: dict[str, Any], e: dict[str, Any], location: str, value: Any
) -> list[str]:
    problems: list[str] = []
    for key, expected in e.items():
        if key.startswith("fixed") and value != expected:
            problems.append(f"{location}: must be the fixed value {expected!r}, found {value!r}")
        elif key.startswith("pattern") and not _matches_pattern(value, expected):
            problems.append(f"{location}: must match the pattern {expected!r}, found {value!r}")
    if e.get("slicing", {}).get("rules") == "closed":
        names = sorted(
            el["sliceName"]
            for el in by_id.values()
            if el.get("sliceName") and el["id"] == f"{e['id']}:{el['sliceName']}"
        )
        if not any(_in_slice(by_id, e["id"], n, value) for n in names):
            found = ", ".join(
                f"{d['path']}={_get_path(value, d['path'])!r}" for d in e["slicing"].get("discriminator", [])
            )
            problems.append(
                f"{location}: {found} matches none of the allowed slices ({', '.join(names)}) of {e['id']}"
            )
    problems.extend(_check_type(reg, e, location, value))
    if "binding" in e:
        problems.extend(_check_binding(reg, e["binding"], location, value))
    return problems


def _check_type(reg: _Registry, e: dict[str, Any], location: str, value: Any) -> list[str]:
    types = e.get("type", [])
    if not types:
        return []
    problems: list[str] = []
    if e["path"].endswith("[x]"):
        key = location.rsplit(".", 1)[-1].split("[", 1)[0]
        stem = e["path"].rsplit(".", 1)[-1][:-3]
        allowed = [stem + t["code"][:1].upper() + t["code"][1:] for t in types]
        if key not in allowed:
            problems.append(f"{location}: type {key} is not allowed here; expected {' or '.join(allowed)}")
    for t in types:
        if t["code"] == "Reference" and t.get("targetProfile") and isinstance(value, dict):
            problems.extend(_check_reference(reg, t["targetProfile"], location, value))
        if t["code"] == "Extension" and isinstance(value, dict):
            for url in t.get("profile", []):
                ext = reg.get(url, "StructureDefinition")
                if ext is None:
                    raise UnsupportedProfile(f"{e['id']}: extension {url} is not among forlop's resources")
                problems.extend(_check(reg, ext, value, location))
    return problems


def _check_reference(reg: _Registry, targets: list[str], location: str, value: dict[str, Any]) -> list[str]:
    ref = value.get("reference")
    if not isinstance(ref, str) or ref.startswith("#") or "/" not in ref:
        return []  # logical (identifier-only) and contained references carry no type to check here
    rtype = ref.split("/")[-2]
    allowed = sorted(
        {
            sd["type"] if (sd := reg.get(url, "StructureDefinition")) else url.removeprefix(HL7_SD)
            for url in targets
        }
    )
    if rtype not in allowed:
        return [f"{location}: reference {ref!r} must point to {' or '.join(allowed)}"]
    return []


def _check_binding(reg: _Registry, binding: dict[str, Any], location: str, value: Any) -> list[str]:
    strength, vs_url = binding.get("strength"), binding.get("valueSet")
    if strength not in ("required", "extensible") or not vs_url:
        return []
    allowed = reg.expand(vs_url)
    if isinstance(value, str):  # a code
        if strength == "required" and value not in {code for _, code in allowed}:
            return [f"{location}: code {value!r} is not in the required ValueSet {vs_url}"]
        return []
    if not isinstance(value, dict):
        return []
    codings = value.get("coding", []) if "coding" in value or "text" in value else [value]
    pairs = [(c.get("system"), c.get("code")) for c in codings]
    if strength == "required" and not any(p in allowed for p in pairs):
        shown = ", ".join(f"{s}|{c}" for s, c in pairs) or "no coding"
        return [f"{location}: {shown} is not in the required ValueSet {vs_url}"]
    ours = reg.systems_of(vs_url)
    return [
        f"{location}: code {c!r} does not exist in {s} (ValueSet {vs_url})"
        for s, c in pairs
        if s in ours and (s, c) not in allowed
    ]


def _matches_pattern(value: Any, pattern: Any) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches_pattern(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches_pattern(v, p) for v in value) for p in pattern)
    return bool(value == pattern)
