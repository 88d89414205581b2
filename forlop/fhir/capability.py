"""The CapabilityStatement served at ``GET /fhir/metadata``: what the read API really does.

Keep it truthful: the search parameters here are those `services.pathway.domain.search_index.SEARCH_PARAMS`
indexes and `services/api/app.py` accepts (a test compares them), plus ``_count``, ``_offset``,
``_cursor``, ``_total``, ``_lastUpdated``, ``_sort``, ``_summary`` and ``_elements``; the _include and
_revinclude values those of `services.api.includes`; the interactions read, vread, search-type,
history-instance and history-type. tests/api/test_capability_claims.py sends a request for every
claim to the running API, and checks that what is not claimed is refused.
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
    (
        "_lastUpdated",
        "date",
        "When the resource last changed (meta.lastUpdated), with the prefixes gt, ge, lt, le and eq (none: eq, "
        "the value's whole precision); repeat it to AND two bounds. A value without an offset is UTC.",
    ),
    (
        "_sort",
        "special",
        "_lastUpdated (oldest first) or -_lastUpdated (newest first), then by id. A sorted search pages by "
        "_offset; without _sort the matches are ordered by id.",
    ),
]
INTERACTIONS = ("read", "vread", "search-type", "history-instance", "history-type")
# The search result parameters every type takes (services/api/subsetting.py, search_controls.py).
_RESULT = [
    ("_summary", "token", "true: the summary elements of each resource (tagged SUBSETTED); count: the total alone; "
     "false or data: the whole resources. text is not supported (no narrative)."),
    ("_elements", "string", "Comma-separated top-level element names: only those (and id, meta and the mandatory "
     "elements) of each resource, tagged SUBSETTED."),
]
_TOKEN_NOTE = ("Token search: code, system|code, |code (no system) or system| (any code of the system); "
               "comma-separated values are ORed.")
_REF_NOTE = ("Reference search: Type/id, id, or an absolute URL ending in Type/id; :missing=true|false finds "
             "resources without or with one.")
_ID = ("_id", "token", "The resource id; comma-separated ids are ORed.")

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
        ("identifier", "token", f"HER-id ({ids.SID_HER_ID}) of a treating unit, or organisation number "
         f"({ids.SID_ORG_NUMBER}) of a health trust. {_TOKEN_NOTE}"),
        ("partof", "reference", f"The health trust a unit is part of. {_REF_NOTE}"),
    ],
    "Practitioner": [("identifier", "token", f"HPR number ({ids.SID_HPR}) or HER-id ({ids.SID_HER_ID}).")],
}

# _include and _revinclude values per searched type (services/api/includes.py says the same; a test compares).
INCLUDE: dict[str, list[str]] = {
    "EpisodeOfCare": ["EpisodeOfCare:patient", "EpisodeOfCare:organization"],
    "Task": ["Task:focus", "Task:patient", "Task:owner"],
}
REVINCLUDE: dict[str, list[str]] = {rtype: ["Task:focus"] for rtype in
                                    ("EpisodeOfCare", "Task", "Patient", "Organization", "Practitioner")}

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
    "id. Unsupported parameters, modifiers and values are rejected with 400 naming them (with 'Prefer: "
    "handling=lenient' an unknown parameter is left out instead and named in an OperationOutcome entry), "
    "and so is a parameter given more than FORLOP_API_MAX_SEARCH_REPEATS times or with more than "
    "FORLOP_API_MAX_SEARCH_VALUES values (10 and 100 by default). JSON only: another _format or an Accept "
    "header without a JSON type is 406; _pretty=true indents. Every change of a resource is a version: vread at "
    "[type]/[id]/_history/[vid], a resource's versions at [type]/[id]/_history and a type's at "
    "[type]/_history?_since=<instant> (newest first, paged by the next link; a deletion is an entry with "
    "request.method DELETE, and a read of a deleted resource is 410 Gone). Reads give ETag W/\"<versionId>\" "
    "and Last-Modified and answer If-None-Match and If-Modified-Since with 304. The whole API is described "
    "at /openapi.json."
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
    "interaction": [{"code": "read"}, {"code": "search-type"}],
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
    res["interaction"] = [{"code": code} for code in INTERACTIONS]
    res["versioning"] = "versioned"
    res["readHistory"] = True
    res["conditionalRead"] = "full-support"  # If-None-Match and If-Modified-Since
    res["updateCreate"] = False
    if rtype in INCLUDE:
        res["searchInclude"] = INCLUDE[rtype]
    if rtype in REVINCLUDE:
        res["searchRevInclude"] = REVINCLUDE[rtype]
    res["searchParam"] = [
        {"name": name, "type": kind, "documentation": doc}
        for name, kind, doc in [_ID, *SEARCH[rtype], *_PAGING, *_RESULT]
    ]
    return res
