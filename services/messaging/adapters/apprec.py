"""AppRec 1.0 / 1.1 (applikasjonskvittering): parse untrusted receipts, build them for the simulated receiver.

Status, code system 8258: 1 OK, 2 avvist (rejected), 3 OK with an error in a sub-message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from services.messaging.adapters.xmlsafe import UnsafeXml, parse_untrusted

APPREC_NS = {"1.0": "http://www.kith.no/xmlstds/apprec/2004-11-21", "1.1": "http://www.kith.no/xmlstds/apprec/2012-02-15"}
STATUS = {"1": "ok", "2": "rejected", "3": "ok-with-errors"}


@dataclass(frozen=True, slots=True)
class AppRec:
    apprec_id: str | None
    original_msg_id: str
    status: str  # ok | ok-with-errors | rejected
    errors: list[dict[str, str]] = field(default_factory=list)
    version: str = "1.0"


class InvalidAppRec(ValueError):
    pass


def parse_apprec(raw: bytes) -> AppRec:
    """Raises InvalidAppRec for anything that is not a well-formed, DTD-free AppRec we can match."""
    try:
        root = parse_untrusted(raw)
    except UnsafeXml as exc:
        raise InvalidAppRec(str(exc)) from None
    version = next((v for v, ns in APPREC_NS.items() if root.tag == f"{{{ns}}}AppRec"), None)
    if version is None:
        raise InvalidAppRec(f"root element {root.tag!r} is not an AppRec")
    ns = {"a": APPREC_NS[version]}
    code = root.xpath("string(a:Status/@V)", namespaces=ns)
    original = root.xpath("string(a:OriginalMsgId/a:Id)", namespaces=ns).strip()
    if code not in STATUS:
        raise InvalidAppRec(f"unknown AppRec status {code!r}")
    if not original:
        raise InvalidAppRec("AppRec without OriginalMsgId/Id")
    errors = [
        {"code": e.get("V", ""), "text": e.get("DN", ""), "system": e.get("S", "")}
        for e in root.xpath("a:Error", namespaces=ns)
    ]
    apprec_id = root.xpath("string(a:Id)", namespaces=ns).strip() or None
    return AppRec(apprec_id, original, STATUS[code], errors, version)


def build_apprec(
    original_msg_id: str, original_type: str, status: str, at: datetime, apprec_id: str,
    errors: list[tuple[str, str]] = (), version: str = "1.0",  # type: ignore[assignment]
) -> bytes:
    """An AppRec 1.0 answering a message (used by the simulated receiver and tests)."""
    ns = APPREC_NS[version]
    code = {v: k for k, v in STATUS.items()}[status]

    def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        el = etree.SubElement(parent, f"{{{ns}}}{tag}", attrs)
        el.text = text
        return el

    root = etree.Element(f"{{{ns}}}AppRec", nsmap={None: ns})
    sub(root, "MsgType", V="APPREC")
    sub(root, "MIGversion", "1.0 2004-11-21" if version == "1.0" else "v1.1 2012-02-15")
    sub(root, "GenDate", at.replace(microsecond=0).isoformat())
    sub(root, "Id", apprec_id)
    for side in ("Sender", "Receiver"):
        inst = sub(sub(sub(root, side), "HCP"), "Inst")
        sub(inst, "Name", "Simulert mottaker" if side == "Sender" else "Avsender")
    sub(root, "Status", V=code, DN={"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}[code])
    for err_code, text in errors:
        sub(root, "Error", V=err_code, DN=text, S="2.16.578.1.12.4.1.1.8221")
    orig = sub(root, "OriginalMsgId")
    sub(orig, "MsgType", V=original_type, DN=original_type)
    sub(orig, "IssueDate", at.replace(microsecond=0).isoformat())
    sub(orig, "Id", original_msg_id)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
