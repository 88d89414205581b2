"""PathwayStatus + its events -> FHIR R4 resources (EpisodeOfCare, Task per milestone, Patient, ...).

Pure and deterministic: the same status and events give the same JSON, byte for byte.
Ids come from source identifiers (`forlop.fhir.ids`), so storing the result is an
upsert. Times come from the events, never from the clock. Every resource is
validated by its fhir.resources R4B model before it leaves (unless the caller opts out:
the pathway service does by default, see `Settings.fhir_validate`; the tests never do).

Patient and unit facts are the latest known: from the latest event by
(occurred_at, recorded_at, event_id), as the pathway service's worklist facts are;
GP and referrer are the latest event's that names one. The unit's trust (its organisation
number) is the latest event's that carries one (`units`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from forlop.events import HealthProfessional, PathwayEvent
from forlop.fhir import ids
from forlop.status import DeadlineStatus, Milestone, MilestoneState, PathwayStatus
from profiles.fhir import load_conformance
from services.pathway.domain.units import organizations, unit_facts

Resource = dict[str, Any]


def map_pathway(
    status: PathwayStatus, events: Sequence[PathwayEvent], *, validate: bool = True,
    trust_names: Mapping[str, str] | None = None,
) -> list[Resource]:
    """The pathway's FHIR resources, in a fixed order: EpisodeOfCare, its Tasks, then the shared ones.

    `validate=False` skips the fhir.resources model check (the pathway service's hot path, unless
    FORLOP_FHIR_VALIDATE=1); the output is the same either way. The unit's Organization and its
    trust's are from this pathway's events; the pathway service rebuilds them from every pathway's
    at the unit (`units.with_units`), so they do not depend on which pathway was derived last.
    `trust_names`: organisation number -> name of the trusts forlop knows by name.
    """
    if not events:
        raise ValueError(f"pathway {status.pathway_key}: no events to take the patient and unit from")
    ordered = sorted(events, key=lambda ev: (ev.occurred_at, ev.recorded_at, ev.event_id))
    latest = ordered[-1]
    gp = next((ev.gp for ev in reversed(ordered) if ev.gp and (ev.gp.hpr or ev.gp.her_id)), None)
    referrer = next(
        (ev.referrer for ev in reversed(ordered) if ev.referrer and (ev.referrer.hpr or ev.referrer.her_id)),
        None,
    )
    context = _Context(
        status=status,
        patient_ref=f"Patient/{ids.patient_id(latest.patient.national_id)}",
        unit_ref=f"Organization/{ids.organization_id(latest.unit.her_id)}",
        unit_name=latest.unit.name,
        episode_ref=f"EpisodeOfCare/{ids.episode_id(status.pathway_key)}",
        recorded={ev.event_id: ev.recorded_at for ev in events},
        first_recorded=min(ev.recorded_at for ev in events),
    )
    resources: list[Resource] = [episode_of_care(context, referrer)]
    resources += [task(context, m) for m in status.milestones]
    resources.append(patient(latest, gp))
    resources += organizations(unit_facts(events)[latest.unit.her_id], trust_names or {})
    practitioners = {p["id"]: p for p in (practitioner(hp) for hp in (gp, referrer) if hp) if p}
    resources += [practitioners[k] for k in sorted(practitioners)]
    return [_validated(r) for r in resources] if validate else resources


@dataclass(frozen=True, slots=True)
class _Context:
    status: PathwayStatus
    patient_ref: str
    unit_ref: str
    unit_name: str
    episode_ref: str
    recorded: dict[str, datetime]  # event id -> recorded_at
    first_recorded: datetime


def episode_of_care(ctx: _Context, referrer: HealthProfessional | None) -> Resource:
    s = ctx.status
    res: Resource = {
        "resourceType": "EpisodeOfCare",
        "id": ids.episode_id(s.pathway_key),
        "meta": {"profile": [ids.PROFILE_EPISODE_OF_CARE]},
    }
    if referrer is not None:
        # The referral itself is not a resource forlop holds; a contained ServiceRequest says who referred.
        res["contained"] = [_referral(ctx, referrer)]
    res["identifier"] = [{"system": ids.pathway_id_system(s.source), "value": s.pathway_id}]
    res["status"] = s.episode_status.value
    if s.status_history:
        res["statusHistory"] = [
            {"status": p.status.value, "period": _period(p.start, p.end)} for p in s.status_history
        ]
    res["type"] = [{"coding": [_coding(ids.SYSTEM_PATHWAY_TYPE, s.pathway_type)]}]
    res["patient"] = {"reference": ctx.patient_ref}
    res["managingOrganization"] = {"reference": ctx.unit_ref, "display": ctx.unit_name}
    if s.start_date or s.end_date:
        res["period"] = _period(s.start_date, s.end_date)
    if referrer is not None:
        res["referralRequest"] = [{"reference": "#referral", "display": "Henvisning"}]
    return res


def _referral(ctx: _Context, referrer: HealthProfessional) -> Resource:
    if referrer.hpr:
        requester: Resource = {"reference": f"Practitioner/{ids.practitioner_id(referrer.hpr)}"}
    else:
        requester = {"identifier": {"system": ids.SID_HER_ID, "value": referrer.her_id}}
    requester["display"] = "Henviser"
    return {
        "resourceType": "ServiceRequest",
        "id": "referral",
        "status": "completed",
        "intent": "order",
        "subject": {"reference": ctx.patient_ref},
        "requester": requester,
    }


def task(ctx: _Context, m: Milestone) -> Resource:
    s = ctx.status
    res: Resource = {
        "resourceType": "Task",
        "id": ids.task_id(s.pathway_key, m.key),
        "meta": {"profile": [ids.PROFILE_TASK]},
    }
    extensions = _task_extensions(m)
    if extensions:
        res["extension"] = extensions
    res["identifier"] = [{"system": ids.SID_MILESTONE, "value": f"{s.pathway_key}/{m.key}"}]
    res["status"] = m.state.value
    if m.deadline_status is not None:
        res["businessStatus"] = _business_status(m.deadline_status)
    res["intent"] = "plan"
    res["code"] = {"coding": [_coding(ids.CS_MILESTONE, m.code)]}
    res["focus"] = {"reference": ctx.episode_ref}
    res["for"] = {"reference": ctx.patient_ref}
    if m.state is MilestoneState.DONE and m.completed_on is not None:
        res["executionPeriod"] = {"end": m.completed_on.isoformat()}
    res["authoredOn"] = _instant(ctx.first_recorded)
    own = [ctx.recorded[e] for e in m.event_ids if e in ctx.recorded]
    res["lastModified"] = _instant(max(own, default=ctx.first_recorded))
    res["owner"] = {"reference": ctx.unit_ref, "display": ctx.unit_name}
    if m.anchor_date or m.deadline:
        res["restriction"] = {"period": _period(m.anchor_date, m.deadline)}
    return res


# Task's elements in the order `task` writes them (so a retimed Task is the same JSON, byte for byte).
_TASK_ELEMENTS = ("resourceType", "id", "meta", "extension", "identifier", "status", "businessStatus", "intent",
                  "code", "focus", "for", "executionPeriod", "authoredOn", "lastModified", "owner", "restriction")


def retimed_task(stored: Resource, milestone: Milestone) -> Resource:
    """A stored Task moved to a later clock: the milestone (from `living.advance`) gives its new
    deadline status and delay cause; nothing else of a Task changes when only time passes.
    """
    res = dict(stored)
    extensions = _task_extensions(milestone)
    res.pop("extension", None)
    res.pop("businessStatus", None)
    if extensions:
        res["extension"] = extensions
    if milestone.deadline_status is not None:
        res["businessStatus"] = _business_status(milestone.deadline_status)
    return {k: res[k] for k in _TASK_ELEMENTS if k in res}


def _task_extensions(m: Milestone) -> list[Resource]:
    extensions = []
    if m.adjusted_deadline is not None:
        extensions.append({"url": ids.EXT_ADJUSTED_DEADLINE, "valueDate": m.adjusted_deadline.isoformat()})
    if m.delay_cause is not None:
        extensions.append({"url": ids.EXT_DELAY_CAUSE, "valueCoding": _coding(ids.CS_DELAY_CAUSE, m.delay_cause)})
    if m.outcome is not None:
        extensions.append({"url": ids.EXT_DECISION_OUTCOME, "valueCoding": _outcome_coding(m.outcome)})
    return extensions


def _business_status(deadline_status: DeadlineStatus) -> Resource:
    return {"coding": [_coding(ids.CS_DEADLINE_STATUS, deadline_status)]}


def patient(latest: PathwayEvent, gp: HealthProfessional | None) -> Resource:
    nid = latest.patient.national_id
    res: Resource = {
        "resourceType": "Patient",
        "id": ids.patient_id(nid),
        "identifier": [{"system": ids.national_id_system(nid), "value": nid}],
        "address": [{"use": "home", "district": latest.patient.municipality}],
    }
    if gp is not None:
        if gp.hpr:
            res["generalPractitioner"] = [
                {"reference": f"Practitioner/{ids.practitioner_id(gp.hpr)}", "display": "Fastlege"}
            ]
        else:
            res["generalPractitioner"] = [
                {"identifier": {"system": ids.SID_HER_ID, "value": gp.her_id}, "display": "Fastlege"}
            ]
    return res


def practitioner(hp: HealthProfessional) -> Resource | None:
    """A Practitioner for a GP or referrer with an HPR number; None when only a HER-id is known."""
    if not hp.hpr:
        return None
    identifiers = [{"system": ids.SID_HPR, "value": hp.hpr}]
    if hp.her_id:
        identifiers.append({"system": ids.SID_HER_ID, "value": hp.her_id})
    return {"resourceType": "Practitioner", "id": ids.practitioner_id(hp.hpr), "identifier": identifiers}


# -- helpers -----------------------------------------------------------------------------------------------


def _period(start: date | None, end: date | None) -> Resource:
    period: Resource = {}
    if start is not None:
        period["start"] = start.isoformat()
    if end is not None:
        period["end"] = end.isoformat()
    return period


def _instant(moment: datetime) -> str:
    """A FHIR dateTime in UTC: one instant gives one text, whatever offset the vendor sent."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@cache
def _displays() -> dict[str, dict[str, str]]:
    """Display text per code system url, read from the published CodeSystems (one source of truth)."""
    return {
        res["url"]: {c["code"]: c["display"] for c in res.get("concept", [])}
        for res in load_conformance().values()
        if res["resourceType"] == "CodeSystem"
    }


def _coding(system: str, code: str) -> Resource:
    coding: Resource = {"system": system, "code": str(code)}
    display = _displays().get(system, {}).get(str(code))
    if display:
        coding["display"] = display
    return coding


def _outcome_coding(letter: str) -> Resource:
    """Decision outcome letters are the national ones; an end outcome outside them keeps only its letter."""
    if letter in _displays().get(ids.CS_DECISION_OUTCOME, {}):
        return _coding(ids.CS_DECISION_OUTCOME, letter)
    return {"code": letter}


@cache
def _model(resource_type: str) -> Any:
    return getattr(importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)


def _validated(resource: Resource) -> Resource:
    """Raise pydantic.ValidationError when the resource is not valid R4; return it unchanged otherwise."""
    _model(resource["resourceType"]).model_validate(resource)
    return resource
