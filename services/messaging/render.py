"""From a stored message row to the XML that leaves: built once, validated before it may go."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from lxml import etree

from forlop.events import PathwayEvent
from services.messaging.adapters import xml_build as xb
from services.messaging.adapters.schemas import SchemaSet
from services.messaging.domain import text
from services.messaging.domain.destinations import places
from services.messaging.domain.model import OwedMessage, Recipient, Role, Trigger
from services.messaging.domain.text import notat
from services.messaging.domain.triggers import trigger_book

PLO_UNSUPPORTED = "PLO logistics schema not supported yet"
DIALOG = "DIALOG_HELSEFAGLIG"


class CannotBuild(ValueError):
    """The message cannot be built with the schemas at hand (reason says why); it is held."""


def message_type(trigger: Trigger) -> str:
    """The trigger's message type (profiles/messaging/triggers.json); a correction is a Dialogmelding."""
    return trigger_book().message_type(trigger) or DIALOG


def correction_type(original_trigger: str) -> str:
    """A correction of a PLO logistics message is its cancellation (same type); of anything else a Dialogmelding."""
    original = message_type(Trigger(original_trigger))
    return original if original in xb.PLO_MESSAGES else DIALOG


def details_of(owed: OwedMessage) -> dict[str, Any]:
    """Everything needed to (re)build the XML later, kept on the row."""
    return {
        **owed.details,
        "event": owed.event.to_dict(),
        "recipient_key": owed.recipient_key,
        "recipient": asdict(owed.recipient) if owed.recipient else None,
    }


def dialog_version(recipient: Recipient, schemas: SchemaSet) -> str:
    if recipient.dialog_version in ("1.0", "1.1") and (
        not schemas.enabled or schemas.has(_DIALOG_FILES[recipient.dialog_version])
    ):
        return recipient.dialog_version
    if not schemas.enabled or schemas.has("dialogmelding-v1.1.xsd"):
        return "1.1"
    return "1.0"


_DIALOG_FILES = {"1.0": "dialogmelding.xsd", "1.1": "dialogmelding-v1.1.xsd"}


def build_xml(
    *,
    msg_id: str,
    trigger: Trigger,
    role: Role,
    details: dict[str, Any],
    sender: xb.Sender,
    gen_date: datetime,
    schemas: SchemaSet,
    conversation_ref: str | None = None,
    corrects: dict[str, Any] | None = None,
) -> str:
    """The message's XML, validated. Raises CannotBuild (hold it) or InvalidMessage (a bug: fail it)."""
    ev = PathwayEvent.from_dict(details["event"])
    recipient = Recipient(**details["recipient"])
    mtype = correction_type(corrects["trigger"]) if corrects else message_type(trigger)
    if mtype in xb.PLO_MESSAGES:
        if schemas.enabled and not schemas.has("Pasientlogistikk-v1.6.xsd"):
            raise CannotBuild(PLO_UNSUPPORTED)
        body = _plo_body(mtype, Trigger(corrects["trigger"]) if corrects else trigger, ev, details, corrects)
    else:
        tema, text = notat(trigger if not corrects else Trigger(corrects["trigger"]), ev, details, corrects=corrects)
        body = xb.dialog_notat(dialog_version(recipient, schemas), tema, text, ev.author_hpr)
    unit_sender = xb.Sender(
        org_name=sender.org_name,
        org_her_id=sender.org_her_id,
        org_number=ev.unit.org_number or sender.org_number,
        unit_name=ev.unit.name,
        unit_her_id=ev.unit.her_id,
    )
    env = xb.Envelope(
        msg_id=msg_id, message_type=mtype, gen_date=gen_date, sender=unit_sender, recipient=recipient, role=role,
        national_id=ev.patient.national_id, conversation_ref=conversation_ref,
    )
    root = xb.envelope(env, body)
    schemas.validate(root)
    return xb.serialise(root).decode("utf-8")


def _plo_body(
    mtype: str, trigger: Trigger, ev: PathwayEvent, details: dict[str, Any], corrects: dict[str, Any] | None
) -> etree._Element:
    """What a PLO logistics message says: the admission with its time, unit and the expected need for
    municipal services; the day the patient was declared ready (after the admission, when known);
    the discharge and where to, "not stated" unless the EHR said."""
    _element, code, display = xb.PLO_MESSAGES[mtype]
    unit = ev.unit.name
    discharged_to = None
    events: list[xb.StayEvent] = []
    if trigger is Trigger.ADMISSION:
        events.append(xb.StayEvent(code, display, ev.occurred_at, text.admitted(ev), text.municipal_need(ev), unit))
    elif trigger is Trigger.DISCHARGE_READY:
        if details.get("admittedAt"):
            admitted_at = datetime.fromisoformat(details["admittedAt"])
            events.append(xb.StayEvent(*xb.STAY_ADMITTED, admitted_at, text.admitted_on(admitted_at, unit)))
        events.append(xb.StayEvent(code, display, ev.occurred_on, text.discharge_ready(ev)))
    else:
        known = places()
        place = known.of(ev.discharge_destination)
        discharged_to = xb.DischargedTo(place.code, place.display, known.code_system,
                                        text.discharged_to(place.text, ev.discharge_destination is not None))
        events.append(xb.StayEvent(code, display, ev.occurred_at, text.discharged(ev, place.text)))
    if corrects:  # the cancellation repeats what it cancels, its own event described as cancelled (as PLO does)
        events[-1] = replace(events[-1], description=text.plo_cancellation(trigger, ev, corrects["id"]), note=None)
    return xb.plo_logistics(mtype, unit, ev.unit.her_id, events, discharged_to, cancels=corrects is not None)
