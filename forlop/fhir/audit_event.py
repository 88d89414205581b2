"""An audit record (forlop.audit) as a FHIR R4 AuditEvent, what `GET /fhir/AuditEvent` answers.

Who: the client (its client_id), the organisations its token names (orgnr_parent, orgnr_child)
and, when the token names one, the health professional by HPR number, who is then the requestor.
What: the patients (Patient/<pseudonymous id>) and the resources touched, the route, the purpose
of use (HL7 v3 ActReason) and the outcome (0 success, 4 refused by the request's fault, 8 failed).
"""

from __future__ import annotations

from typing import Any

from forlop.audit import AuditRecord
from forlop.fhir.ids import FHIR_BASE, SID_HPR, SID_ORG_NUMBER

SID_CLIENT_ID = f"{FHIR_BASE}/sid/client-id"  # the HelseID client_id of the calling system
SID_MESSAGE_ID = f"{FHIR_BASE}/sid/message-id"  # an e-message's MsgId (GET /messages/<id>)
_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
               "display": "RESTful Operation"}
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_SOURCE_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                "display": "Application Server"}


def interaction(record: AuditRecord) -> tuple[str, str]:
    """(AuditEvent.action, restful-interaction code) of the request."""
    if record.method == "POST":
        return "C", "create"
    if record.route.endswith(">") and "<" in record.route.rsplit("/", 1)[-1]:
        return "R", "read"
    return "E", "search-type"


def outcome(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def audit_event(audit_id: int, record: AuditRecord) -> dict[str, Any]:
    action, subtype = interaction(record)
    agents: list[dict[str, Any]] = [{
        "type": {"text": "client system"},
        "who": {"identifier": {"system": SID_CLIENT_ID, "value": record.client_id or record.subject or "unknown"}},
        "requestor": record.hpr_number is None,
    }]
    for org in (record.org_parent, record.org_child):
        if org:
            agents.append({"type": {"text": "organisation"},
                           "who": {"identifier": {"system": SID_ORG_NUMBER, "value": org}}, "requestor": False})
    if record.hpr_number:
        agents.append({"type": {"text": "health professional"},
                       "who": {"identifier": {"system": SID_HPR, "value": record.hpr_number}}, "requestor": True})
    entities: list[dict[str, Any]] = [
        {"what": {"reference": f"Patient/{p}"},
         "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
         "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}}
        for p in record.patients
    ]
    for ref in record.resources:
        kind, _, rid = ref.partition("/")
        what = ({"identifier": {"system": SID_MESSAGE_ID, "value": rid}} if kind == "messages"
                else {"reference": ref})
        entities.append({"what": what, "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}})
    entities.append({"type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
                     "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
                     "name": f"{record.method} {record.route}", "description": record.path})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(audit_id),
        "type": _EVENT_TYPE,
        "subtype": [{"system": _INTERACTION, "code": subtype}],
        "action": action,
        "recorded": record.recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome(record.status),
        "outcomeDesc": f"HTTP {record.status}",
        "purposeOfEvent": [{"coding": [{"system": _ACT_REASON, "code": record.purpose}]}],
        "agent": agents,
        "source": {"observer": {"display": "forlop"}, "type": [_SOURCE_TYPE]},
        "entity": entities,
    }
    return event
