"""The values messaging decides with: triggers, roles, recipients and the messages owed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Trigger(StrEnum):
    DECISION = "decision"  # klinisk beslutning
    EVALUATION = "evaluation"  # evalueringspunkt
    END = "end"  # avslutning
    ADMISSION = "admission"  # innleggelse (PLO LOG_INNLAGT)
    DISCHARGE_READY = "discharge-ready"  # utskrivningsklar (LOG_UTSKRIVNINGSKLAR)
    DISCHARGED = "discharged"  # utskrevet (LOG_UTSKREVET)
    CORRECTION = "correction"  # a sent message's registration was withdrawn


class Role(StrEnum):
    GP = "gp"  # fastlege
    REFERRER = "referrer"  # henviser
    MUNICIPALITY = "municipality"  # kommunal forløpskoordinator


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    FAILED = "failed"
    HELD = "held"
    SUPPRESSED = "suppressed"


# Not yet on the wire: can still be cancelled or re-gated.
UNSENT = (MessageStatus.QUEUED, MessageStatus.HELD, MessageStatus.SUPPRESSED)

NO_CONSENT = "no consent"
WITHDRAWN = "withdrawn before sending"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where a message goes: the communication party's HER-id inside its organisation (two-level)."""

    her_id: str
    name: str
    org_her_id: str | None = None  # the organisation above the party, when known
    org_name: str | None = None
    org_number: str | None = None
    dialog_version: str | None = None  # "1.0" or "1.1": the recipient's preferred Dialogmelding


@dataclass(frozen=True, slots=True)
class MunicipalEntry:
    """A municipality's receiving service for pathway information (kommunal forløpskoordinator)."""

    municipality: str  # kommunenummer
    recipient: Recipient


class MunicipalityDirectory(Protocol):
    """Address-register port: kommunenummer -> the receiving service, or None when unknown."""

    def municipality(self, kommunenummer: str) -> MunicipalEntry | None: ...


class GpDirectory(Protocol):
    """Fastlege-register port: the patient's GP by national id, or None when unknown."""

    def gp_for(self, national_id: str) -> Recipient | None: ...


@dataclass(frozen=True, slots=True)
class OwedMessage:
    """One message the history owes. `recipient` is None when it could not be resolved (held)."""

    dedupe_key: str  # pathway/registration|trigger|role|recipient-key: one row ever per key
    registration_id: str
    trigger: Trigger
    role: Role
    recipient_key: str  # stable even while the HER-id is unresolved (e.g. "kommune:5001")
    recipient: Recipient | None
    event: Any  # the triggering PathwayEvent
    consent: bool = True  # False: municipality without consent in force -> suppressed
    unresolved_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
