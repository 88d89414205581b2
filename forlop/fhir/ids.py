"""Canonical URLs, identifier systems and deterministic resource ids.

Resource ids are derived from source identifiers (uuid5 over a forlop namespace), so
mapping the same pathway again is an upsert of the same resources, never a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from functools import lru_cache

FHIR_BASE = "https://forlop.no/fhir"
"""The canonical base of every conformance resource and identifier system forlop publishes."""

# Norwegian identifier systems (Volven / KITH OIDs).
SID_FNR = "urn:oid:2.16.578.1.12.4.1.4.1"  # fødselsnummer
SID_DNR = "urn:oid:2.16.578.1.12.4.1.4.2"  # D-nummer
SID_HPR = "urn:oid:2.16.578.1.12.4.1.4.4"  # HPR-nummer (helsepersonellregisteret)
SID_ORG_NUMBER = "urn:oid:2.16.578.1.12.4.1.4.101"  # organisasjonsnummer (Enhetsregisteret)
SID_HER_ID = "urn:oid:2.16.578.1.12.4.1.2"  # HER-id (Adresseregisteret)
SYSTEM_PATHWAY_TYPE = "urn:oid:2.16.578.1.12.4.1.1.9321"  # kodeverk 9321: D11, D12, D01, ...
SYSTEM_MUNICIPALITY = "urn:oid:2.16.578.1.12.4.1.1.3402"  # kommunenummer

# forlop's own identifier systems.
PATHWAY_ID_SYSTEMS: dict[str, str] = {
    "dips": f"{FHIR_BASE}/sid/pathway/dips",
    "esp": f"{FHIR_BASE}/sid/pathway/esp",
}
SID_MILESTONE = f"{FHIR_BASE}/sid/milestone"  # value: "<pathway_key>/<milestone key>"


def canonical(resource_type: str, name: str) -> str:
    """The canonical URL of one of forlop's conformance resources."""
    return f"{FHIR_BASE}/{resource_type}/{name}"


CS_MILESTONE = canonical("CodeSystem", "milestone")
CS_DEADLINE_STATUS = canonical("CodeSystem", "deadline-status")
CS_DELAY_CAUSE = canonical("CodeSystem", "delay-cause")
CS_DECISION_OUTCOME = canonical("CodeSystem", "decision-outcome")
VS_MILESTONE = canonical("ValueSet", "milestone")
VS_DEADLINE_STATUS = canonical("ValueSet", "deadline-status")
VS_DELAY_CAUSE = canonical("ValueSet", "delay-cause")
VS_DECISION_OUTCOME = canonical("ValueSet", "decision-outcome")
VS_PATHWAY_TYPE = canonical("ValueSet", "pathway-type")
VS_MILESTONE_STATE = canonical("ValueSet", "milestone-state")  # Task.status codes forlop uses
VS_EPISODE_STATUS = canonical("ValueSet", "episode-status")  # EpisodeOfCare.status codes forlop uses
EXT_ADJUSTED_DEADLINE = canonical("StructureDefinition", "adjusted-deadline")
EXT_DELAY_CAUSE = canonical("StructureDefinition", "delay-cause")
EXT_DECISION_OUTCOME = canonical("StructureDefinition", "decision-outcome")
PROFILE_EPISODE_OF_CARE = canonical("StructureDefinition", "forlop-episodeofcare")
PROFILE_TASK = canonical("StructureDefinition", "forlop-task")

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, FHIR_BASE)


def pathway_id_system(source: str) -> str:
    """The identifier system of a source system's pathway ids; KeyError for an unknown source."""
    return PATHWAY_ID_SYSTEMS[str(source)]


def national_id_system(national_id: str) -> str:
    """Fødselsnummer or D-nummer system: a D-nummer adds 40 to the day, so its first digit is 4-7."""
    return SID_DNR if national_id[:1] in ("4", "5", "6", "7") else SID_FNR


def resource_id(kind: str, *parts: str) -> str:
    """A FHIR-legal id (``[A-Za-z0-9\\-\\.]{1,64}``), the same for the same kind and parts.

    The parts are JSON-encoded before hashing, so ("a|b",) and ("a", "b") never collide.
    """
    if not parts:
        raise ValueError("resource_id needs at least one part")
    return _resource_id((kind, *map(str, parts)))


@lru_cache(maxsize=65536)  # Patient, Organization and Practitioner ids recur pathway after pathway
def _resource_id(items: tuple[str, ...]) -> str:
    if all(_NOTHING_TO_ESCAPE.match(item) for item in items):
        text = '["' + '", "'.join(items) + '"]'  # what json.dumps gives for these, without its encoder
    else:
        text = json.dumps(list(items), ensure_ascii=False)
    return str(uuid.uuid5(NAMESPACE, text))


_NOTHING_TO_ESCAPE = re.compile(r'[^"\\\x00-\x1f]*\Z')


def episode_id(pathway_key: str) -> str:
    return resource_id("EpisodeOfCare", pathway_key)


def task_id(pathway_key: str, milestone_key: str) -> str:
    return resource_id("Task", pathway_key, milestone_key)


# Keyed: a Patient id (in URLs, ingress logs) must not be reversible by hashing every possible
# fødselsnummer. Production sets FORLOP_PATIENT_ID_KEY, the same secret in every replica and for the
# life of the data (changing it changes every Patient id); the embedded default uses this development key.
DEVELOPMENT_PATIENT_ID_KEY = b"forlop-development-patient-id-key"
_patient_id_key = DEVELOPMENT_PATIENT_ID_KEY


def set_patient_id_key(key: str | None) -> None:
    global _patient_id_key
    _patient_id_key = key.encode() if key else DEVELOPMENT_PATIENT_ID_KEY


def patient_id(national_id: str) -> str:
    pseudonym = hmac.new(_patient_id_key, national_id.encode(), hashlib.sha256).hexdigest()
    return resource_id("Patient", pseudonym)


def organization_id(her_id: str) -> str:
    return resource_id("Organization", her_id)


def trust_id(org_number: str) -> str:
    """A health trust's Organization, by its organisation number (a unit's is by its HER-id)."""
    return resource_id("Organization", "org-number", org_number)


def practitioner_id(hpr: str) -> str:
    return resource_id("Practitioner", hpr)
