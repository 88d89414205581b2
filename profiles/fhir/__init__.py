"""forlop's FHIR R4 conformance resources as data: one resource per JSON file.

CodeSystems and ValueSets for milestones, deadline status, delay cause and decision
outcome, a fragment of kodeverk 9321 (pathway types), the extensions and the
EpisodeOfCare and Task profiles. Canonical base: ``forlop.fhir.ids.FHIR_BASE``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


def _load() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    files = sorted(
        (f for f in resources.files(__name__).iterdir() if f.name.endswith(".json")), key=lambda f: f.name
    )
    for f in files:
        res = json.loads(f.read_text("utf-8"))
        url = res.get("url")
        if not url:
            raise ValueError(f"profiles/fhir/{f.name}: a conformance resource needs a canonical url")
        if url in found:
            # A CodeSystem and its ValueSet never share a url; two files claiming one url is a mistake.
            raise ValueError(f"profiles/fhir/{f.name}: canonical url {url} is defined twice")
        found[url] = res
    return found


@cache
def _cached() -> dict[str, dict[str, Any]]:
    return _load()


def load_conformance() -> dict[str, dict[str, Any]]:
    """Every conformance resource by canonical url (a fresh copy each call: the cache stays intact)."""
    return json.loads(json.dumps(_cached()))
