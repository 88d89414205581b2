"""Hardened lxml parsers: no entities, no DTDs, no network, no huge trees."""

from __future__ import annotations

from lxml import etree

MAX_BYTES = 5 * 1024 * 1024  # a document from outside; larger ones are refused unread


class UnsafeXml(ValueError):
    """The document is malformed, too large or carries a DTD (entity tricks: XXE, billion laughs)."""


def parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, dtd_validation=False,
        remove_comments=False,
    )


def parse_untrusted(raw: bytes) -> etree._Element:
    """Parse a document from outside; any DOCTYPE is refused before it can declare an entity."""
    if len(raw) > MAX_BYTES:
        raise UnsafeXml(f"document larger than {MAX_BYTES} bytes")
    try:
        tree = etree.fromstring(raw, parser())
    except etree.XMLSyntaxError as exc:
        raise UnsafeXml(f"not well-formed XML: {exc}") from None
    doc = tree.getroottree().docinfo
    if doc.doctype or doc.internalDTD is not None or doc.externalDTD is not None:
        raise UnsafeXml("DOCTYPE declarations are not accepted")
    return tree
