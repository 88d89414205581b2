"""From a stored message row to the XML that leaves: built once, validated before it may go."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from forlop.events import PathwayEvent
from services.messaging.adapters import xml_build as xb
from services.messaging.adapters.schemas import SchemaSet
from services.messaging.domain.model import PLO_TRIGGERS, OwedMessage, Recipient, Role, Trigger
from services.messaging.domain.text import notat, plo_description

PLO_UNSUPPORTED = "PLO logistics schema not supported yet"


class CannotBuild(ValueError):
    """The message cannot be built with the schemas at hand (reason says why); it is held."""


def message_type(trigger: Trigger) -> str:
    return xb.PLO_TYPES[trigger][0] if trigger in PLO_TRIGGERS else "DIALOG_HELSEFAGLIG"


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
    mtype = message_type(trigger)
    if trigger in PLO_TRIGGERS:
        if schemas.enabled and not schemas.has("Pasientlogistikk-v1.6.xsd"):
            raise CannotBuild(PLO_UNSUPPORTED)
        body = xb.plo_logistics(trigger, ev.unit.name, ev.unit.her_id, ev.occurred_at, plo_description(trigger, ev))
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
