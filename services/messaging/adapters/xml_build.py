"""MsgHead 1.2 envelopes with a Dialogmelding (1.0 / 1.1) Notat or a PLO 1.6 Pasientlogistikk body. lxml only."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache

from lxml import etree

from forlop.clock import OSLO
from services.messaging.domain.model import Recipient, Role

MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
DIALOG = {"1.0": "http://www.kith.no/xmlstds/dialog/2006-10-11", "1.1": "http://www.kith.no/xmlstds/dialog/2013-01-23"}
PLO = "http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01"
PO = "http://www.kith.no/xmlstds/po/poKomponent/2012-04-01"
FK1 = "http://www.kith.no/xmlstds/felleskomponent1"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

OID_HER = "2.16.578.1.12.4.1.1.9051"  # identifier types for organisations (HER, ENH)
OID_PERSON_ID = "2.16.578.1.12.4.1.1.8116"  # FNR, DNR, HPR
OID_DIALOG_THEME = "2.16.578.1.12.4.1.1.7322"  # Tema for helsefaglig dialog
OID_ROLE = "2.16.578.1.12.4.1.1.9034"  # rolle i forhold til pasient
OID_STAY_EVENT = "2.16.578.1.12.4.1.1.9121"  # hendelse i pasientlogistikk

MESSAGE_TYPES = {
    "DIALOG_HELSEFAGLIG": "Helsefaglig dialog",
    "LOG_INNLAGT": "Melding om innlagt pasient",
    "LOG_UTSKRIVNINGSKLAR": "Melding om utskrivningsklar pasient",
    "LOG_UTSKREVET": "Melding om utskrevet pasient",
}
# PLO 1.6 logistics: message type -> (body element, its event's code in code system 9121, display)
PLO_MESSAGES = {
    "LOG_INNLAGT": ("MeldingInnlagtPasient", "1", "Pasient innlagt"),
    "LOG_UTSKRIVNINGSKLAR": ("MeldingUtskrivningsklarPasient", "3", "Pasient utskrivningsklar"),
    "LOG_UTSKREVET": ("MeldingOmUtskrevetPasient", "2", "Pasient utskrevet"),
}
STAY_ADMITTED = ("1", "Pasient innlagt")


@dataclass(frozen=True, slots=True)
class Sender:
    """The sending organisation (helseforetak) and, below it, the treating unit."""

    org_name: str
    org_her_id: str
    org_number: str | None
    unit_name: str
    unit_her_id: str


@dataclass(frozen=True, slots=True)
class Envelope:
    msg_id: str
    message_type: str
    gen_date: datetime
    sender: Sender
    recipient: Recipient
    role: Role
    national_id: str
    conversation_ref: str | None = None  # RefToParent/RefToConversation: the message this one follows up


def _sub(parent: etree._Element, ns: str, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{tag}", {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = text
    return el


def _ts(at: datetime) -> str:
    return at.astimezone(OSLO).replace(microsecond=0, tzinfo=None).isoformat()


def _ident(
    parent: etree._Element, ns: str, value: str, type_v: str, type_dn: str, oid: str, inner: str | None = None
) -> None:
    """Ident/Id/TypeId; `inner` is the namespace of Id and TypeId when it differs (fk1:Ident type)."""
    ident = _sub(parent, ns, "Ident")
    _sub(ident, inner or ns, "Id", value)
    _sub(ident, inner or ns, "TypeId", V=type_v, DN=type_dn, S=oid)


def _organisation(parent: etree._Element, name: str, her_id: str, org_number: str | None = None) -> etree._Element:
    org = _sub(parent, MH, "Organisation")
    _sub(org, MH, "OrganisationName", name)
    _ident(org, MH, her_id, "HER", "HER-id", OID_HER)
    if org_number:
        _ident(org, MH, org_number, "ENH", "Organisasjonsnummeret i Enhetsregisteret", OID_HER)
    return org


def envelope(env: Envelope, content: etree._Element) -> etree._Element:
    root = etree.Element(f"{{{MH}}}MsgHead", nsmap={None: MH, "xsi": XSI})
    info = _sub(root, MH, "MsgInfo")
    _sub(info, MH, "Type", V=env.message_type, DN=MESSAGE_TYPES.get(env.message_type, env.message_type))
    _sub(info, MH, "MIGversion", "v1.2 2006-05-24")
    _sub(info, MH, "GenDate", _ts(env.gen_date))
    _sub(info, MH, "MsgId", env.msg_id)
    if env.conversation_ref:
        conv = _sub(info, MH, "ConversationRef")
        _sub(conv, MH, "RefToParent", env.conversation_ref)
        _sub(conv, MH, "RefToConversation", env.conversation_ref)
    info.append(deepcopy(_sender(env.sender)))
    info.append(deepcopy(_receiver_of(env.recipient, env.role)))
    patient = _sub(info, MH, "Patient")
    kind, label = ("DNR", "D-nummer") if env.national_id[:1] in "4567" else ("FNR", "Fødselsnummer")
    _ident(patient, MH, env.national_id, kind, label, OID_PERSON_ID)
    ref = _sub(_sub(root, MH, "Document"), MH, "RefDoc")
    _sub(ref, MH, "IssueDate", V=_ts(env.gen_date))
    _sub(ref, MH, "MsgType", V="XML", DN="XML-instans")
    _sub(ref, MH, "Content").append(content)
    return root


# Sender and Receiver recur in every message to the same party: built once, copied into each
# envelope (one C-level deepcopy instead of ~27 of an envelope's ~40 SubElement calls). The cached
# trees hang under a MsgHead-namespaced holder, so a copy declares no namespace of its own.
@lru_cache(maxsize=1024)
def _sender(s: Sender) -> etree._Element:
    sender = _sub(etree.Element(f"{{{MH}}}MsgInfo", nsmap={None: MH}), MH, "Sender")
    org = _organisation(sender, s.org_name, s.org_her_id, s.org_number)
    _organisation(org, s.unit_name, s.unit_her_id)
    return sender


@lru_cache(maxsize=8192)
def _receiver_of(r: Recipient, role: Role) -> etree._Element:
    receiver = _sub(etree.Element(f"{{{MH}}}MsgInfo", nsmap={None: MH}), MH, "Receiver")
    _receiver(receiver, r, role)
    return receiver


def _receiver(parent: etree._Element, r: Recipient, role: Role) -> None:
    """Two levels when the register knows the organisation above the party; else the party alone."""
    if r.org_her_id:
        org = _organisation(parent, r.org_name or r.name, r.org_her_id, r.org_number)
        if role is Role.MUNICIPALITY:
            _organisation(org, r.name, r.her_id)
            return
        hcp = _sub(org, MH, "HealthcareProfessional")
        if role is Role.GP:
            _sub(hcp, MH, "RoleToPatient", V="6", DN="Fastlege", S=OID_ROLE)
        _ident(hcp, MH, r.her_id, "HER", "HER-id", OID_HER)
        return
    _organisation(parent, r.name, r.her_id)


def dialog_notat(version: str, tema: str, text: str, author_hpr: str | None) -> etree._Element:
    ns = DIALOG[version]
    root = etree.Element(f"{{{ns}}}Dialogmelding", nsmap={None: ns, "fk1": FK1})
    notat = _sub(root, ns, "Notat")
    _sub(notat, ns, "TemaKodet", V="6", DN="Henvendelse om pasient", S=OID_DIALOG_THEME)
    _sub(notat, ns, "Tema", tema)
    _sub(notat, ns, "TekstNotatInnhold", text)
    if author_hpr:
        roles = _sub(notat, ns, "RollerRelatertNotat")
        _sub(roles, ns, "RoleToPatient", V="21", DN="Helsefaglig kontakt", S=OID_ROLE)
        _ident(_sub(roles, ns, "HealthcareProfessional"), ns, author_hpr, "HPR", "HPR-nummer", OID_PERSON_ID, FK1)
    return root


@dataclass(frozen=True, slots=True)
class StayEvent:
    """One TidsfestetHendelse: an event of the stay (code from 9121), when, and what the reader is told."""

    code: str
    display: str
    at: datetime | date  # a date when only the day is meant (the day the patient was declared ready)
    description: str
    note: str | None = None  # Merknad
    place: str | None = None  # StedForHendelse: where it happened


@dataclass(frozen=True, slots=True)
class DischargedTo:
    """UtskrevetTil/UtTil: a place code and the note that says it in words."""

    code: str
    display: str
    system: str  # the code system's OID
    note: str


def plo_logistics(
    message_type: str, unit_name: str, unit_her_id: str, events: list[StayEvent],
    discharged_to: DischargedTo | None = None, *, cancels: bool = False,
) -> etree._Element:
    """A Pasientlogistikk body: new (Forsendelsesstatus N) or the cancellation (C) of one sent before."""
    element = PLO_MESSAGES[message_type][0]
    root = etree.Element(f"{{{PLO}}}Pasientlogistikk", nsmap={"p1": PLO, None: PO, "fk1": FK1})
    info = _sub(root, PO, "InformasjonOmForsendelsen")
    _sub(info, PO, "Forsendelsesstatus", V="C" if cancels else "N", DN="Kansellering" if cancels else "Ny")
    contact = _sub(_sub(root, PO, "TilknyttetEnhet"), PO, "Kontaktenhet")
    _sub(contact, FK1, "OrganisationName", unit_name)
    _ident(contact, FK1, unit_her_id, "HER", "HER-id", OID_HER)
    body = _sub(root, PLO, element)
    if discharged_to is not None:  # required in MeldingOmUtskrevetPasient
        out = _sub(body, PO, "UtskrevetTil")
        _sub(out, PO, "UtTil", V=discharged_to.code, DN=discharged_to.display, S=discharged_to.system)
        _sub(out, PO, "Merknad", discharged_to.note)
    for e in events:
        event = _sub(body, PO, "TidsfestetHendelse")
        _sub(event, PO, "Hendelsekode", V=e.code, DN=e.display, S=OID_STAY_EVENT)
        _sub(event, PO, "BeskrivelseAvHendelse", e.description)
        _sub(event, PO, "TidspunktForHendelse", V=_ts(e.at) if isinstance(e.at, datetime) else e.at.isoformat())
        _sub(event, PO, "Anslag", "false")
        if e.note:
            _sub(event, PO, "Merknad", e.note)
        if e.place:
            _sub(_sub(event, PO, "StedForHendelse"), PO, "StedHendelse", e.place)
    return root


def serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
