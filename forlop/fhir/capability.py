"""The CapabilityStatement served at ``GET /fhir/metadata``: what the read API really does.

Keep it truthful: the search parameters here are those `services.pathway.domain.search_index.SEARCH_PARAMS`
indexes and `services/api/app.py` accepts (a test compares them), plus ``_count``, ``_offset``,
``_cursor`` and ``_total``.
"""

from __future__ import annotations

from typing import Any

from forlop.fhir import ids

LAST_CHANGED = "2026-12-04"  # CapabilityStatement.date: bump when the API surface changes

_PAGING = [
    ("_count", "number", "Page size; default 50, at most 500 (a larger value gives 500)."),
    ("_offset", "number", "Number of matches to skip (the Bundle's previous link uses it); at most "
     "FORLOP_API_MAX_OFFSET (10,000 by default): deeper pages by the next link."),
    (
        "_cursor",
        "string",
        "Paging position from a Bundle's next link: the matches after it, whatever changed since the page "
        "before (keyset paging on the resource id).",
    ),
    (
        "_total",
        "token",
        "none | estimate | accurate. Bundle.total is counted only for accurate (or _count=0); otherwise it is "
        "given when the page shows it (the last page of a search from the first match) and left out else.",
    ),
]
_TOKEN_NOTE = "Token search: code or system|code; comma-separated values are ORed."
_REF_NOTE = "Reference search: Type/id, id, or an absolute URL ending in Type/id."

# (name, type, documentation) per resource type, in the order the API lists them.
SEARCH: dict[str, list[tuple[str, str, str]]] = {
    "EpisodeOfCare": [
        (
            "identifier",
            "token",
            f"The source system's pathway id ({ids.FHIR_BASE}/sid/pathway/dips|..., "
            f".../esp|...). {_TOKEN_NOTE}",
        ),
        (
            "patient",
            "reference",
            f"{_REF_NOTE} Also chained on the patient's identifier: patient.identifier="
            f"{ids.SID_FNR}|<fødselsnummer> (patient:identifier is accepted as the same).",
        ),
        ("status", "token", "waitlist | active | finished | entered-in-error."),
        ("type", "token", f"Pathway type, kodeverk 9321 ({ids.SYSTEM_PATHWAY_TYPE}|D11). {_TOKEN_NOTE}"),
        ("organization", "reference", f"The treating unit (managingOrganization). {_REF_NOTE}"),
    ],
    "Task": [
        ("focus", "reference", f"The pathway (EpisodeOfCare). {_REF_NOTE}"),
        ("patient", "reference", f"The patient (Task.for). {_REF_NOTE}"),
        ("status", "token", "requested | completed | cancelled."),
        ("code", "token", f"The milestone ({ids.CS_MILESTONE}). {_TOKEN_NOTE}"),
        (
            "business-status",
            "token",
            f"The deadline status ({ids.CS_DEADLINE_STATUS}), e.g. overdue. {_TOKEN_NOTE}",
        ),
        ("owner", "reference", f"The treating unit. {_REF_NOTE}"),
    ],
    "Patient": [("identifier", "token", f"Fødselsnummer ({ids.SID_FNR}) or D-nummer ({ids.SID_DNR}).")],
    "Organization": [
        ("identifier", "token", f"HER-id ({ids.SID_HER_ID}) or organisation number ({ids.SID_ORG_NUMBER}).")
    ],
    "Practitioner": [("identifier", "token", f"HPR number ({ids.SID_HPR}) or HER-id ({ids.SID_HER_ID}).")],
}

PROFILES: dict[str, list[str]] = {
    "EpisodeOfCare": [ids.PROFILE_EPISODE_OF_CARE],
    "Task": [ids.PROFILE_TASK],
}

DOCUMENTATION: dict[str, str] = {
    "EpisodeOfCare": "One national care pathway (nasjonalt pasientforløp) with its status history.",
    "Task": "One milestone of a pathway: national deadline (restriction.period.end), adjusted deadline "
    "(extension adjusted-deadline) and deadline status (businessStatus).",
    "Patient": "The patient, identified by fødselsnummer or D-nummer; address.district is the kommunenummer.",
    "Organization": "The treating unit, identified by HER-id.",
    "Practitioner": "GP (fastlege) or referrer (henviser), identified by HPR number.",
}

_DESCRIPTION = (
    "Read-only FHIR R4 API over the national care pathways for mental health and substance abuse "
    "(D11, D12, D01) that forlop derives from EHR registrations."
)
_REST_DOC = (
    "Searches AND across parameters and OR across comma-separated values; results are ordered by resource "
    "id. Unsupported parameters are rejected with 400, and so is a parameter given more than "
    "FORLOP_API_MAX_SEARCH_REPEATS times or with more than FORLOP_API_MAX_SEARCH_VALUES values (10 and 100 "
    "by default). The whole API is described at /openapi.json."
)
_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
_SECURITY_DOC = (
    "Every request except /metadata needs 'Authorization: Bearer <JWT>', an RS256 token from the configured "
    "issuer (HelseID style) with scope forlop/fhir.read (AuditEvent: forlop/audit.read). SMART-on-FHIR launch contexts and patient/user "
    "scopes are not supported."
)


# The audit trail (forlop.audit): searched by patient only, with scope forlop/audit.read.
_AUDIT_EVENT: dict[str, Any] = {
    "type": "AuditEvent",
    "documentation": "Who accessed a patient's data: one event per request that touched it (client, its "
    "organisation numbers, HPR number, route, purpose of use, outcome). Needs scope forlop/audit.read.",
    "interaction": [{"code": "search-type"}],
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "searchParam": [
        {"name": "patient", "type": "reference",
         "documentation": f"Required. The patient: national id ({ids.SID_FNR}|<id> or the 11 digits), "
         "Patient/<id> or a Patient id."},
        {"name": "date", "type": "date",
         "documentation": "When the access was recorded: ge, gt, le, lt, eq; repeat for a window."},
        {"name": "_count", "type": "number", "documentation": "Page size; default 100, at most 500."},
        {"name": "_cursor", "type": "string", "documentation": "Paging position from a Bundle's next link."},
    ],
}


def capability_statement(base_url: str, version: str) -> dict[str, Any]:
    """The server's CapabilityStatement (FHIR 4.0.1, JSON only, read and search-type, no writes)."""
    return {
        "resourceType": "CapabilityStatement",
        "id": "forlop",
        "url": ids.canonical("CapabilityStatement", "forlop"),
        "version": version,
        "name": "ForlopFhirServer",
        "title": "forlop FHIR read API",
        "status": "active",
        "experimental": False,
        "date": LAST_CHANGED,
        "publisher": "forlop",
        "description": _DESCRIPTION,
        "kind": "instance",
        "software": {"name": "forlop", "version": version},
        "implementation": {"description": "forlop", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": _REST_DOC,
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [{"system": _SECURITY_SERVICE, "code": "OAuth", "display": "OAuth"}],
                            "text": "OAuth 2.0 bearer token",
                        }
                    ],
                    "description": _SECURITY_DOC,
                },
                "resource": [*(_resource(rtype) for rtype in SEARCH), _AUDIT_EVENT],
            }
        ],
    }


def _resource(rtype: str) -> dict[str, Any]:
    res: dict[str, Any] = {"type": rtype}
    if rtype in PROFILES:
        res["supportedProfile"] = PROFILES[rtype]
    res["documentation"] = DOCUMENTATION[rtype]
    res["interaction"] = [{"code": "read"}, {"code": "search-type"}]
    res["versioning"] = "versioned"
    res["readHistory"] = False
    res["updateCreate"] = False
    res["searchParam"] = [
        {"name": name, "type": kind, "documentation": doc} for name, kind, doc in [*SEARCH[rtype], *_PAGING]
    ]
    return res
