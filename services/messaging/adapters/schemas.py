"""Validation against the official XSDs in FORLOP_XSD_DIR: compiled once per directory, cached.

forlop does not ship the schemas. A generated entry point imports the ones present, so a
MsgHead with a Dialogmelding or PLO body (Content is processContents="strict") validates in one pass.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from lxml import etree

from services.messaging.adapters.xmlsafe import parser

log = logging.getLogger(__name__)

NAMESPACES = {
    "MsgHead-v1_2.xsd": "http://www.kith.no/xmlstds/msghead/2006-05-24",
    "dialogmelding.xsd": "http://www.kith.no/xmlstds/dialog/2006-10-11",
    "dialogmelding-v1.1.xsd": "http://www.kith.no/xmlstds/dialog/2013-01-23",
    "Pasientlogistikk-v1.6.xsd": "http://www.kith.no/xmlstds/po/Pasientlogistikk/2012-04-01",
    "AppRec-v1-2004-11-21.xsd": "http://www.kith.no/xmlstds/apprec/2004-11-21",
    "AppRec-v1.1.xsd": "http://www.kith.no/xmlstds/apprec/2012-02-15",
}
_lock = threading.Lock()
_cache: dict[str, SchemaSet] = {}


class InvalidMessage(ValueError):
    """A built message does not validate; it must not leave."""


class SchemaSet:
    """The compiled schemas of one directory, or none (embedded run without FORLOP_XSD_DIR)."""

    def __init__(self, xsd_dir: Path | None) -> None:
        self.dir = xsd_dir
        self.present = {name for name in NAMESPACES if xsd_dir and (xsd_dir / name).is_file()}
        self._schema: etree.XMLSchema | None = None
        if xsd_dir is not None:
            if "MsgHead-v1_2.xsd" not in self.present:
                raise FileNotFoundError(f"FORLOP_XSD_DIR={xsd_dir}: MsgHead-v1_2.xsd not found")
            self._schema = _compile(xsd_dir, sorted(self.present))

    @property
    def enabled(self) -> bool:
        return self._schema is not None

    def has(self, name: str) -> bool:
        return name in self.present

    def validate(self, doc: etree._Element) -> None:
        if self._schema is None:
            return
        if not self._schema.validate(doc):
            errors = "; ".join(f"line {e.line}: {e.message}" for e in list(self._schema.error_log)[:5])
            raise InvalidMessage(f"schema validation failed: {errors}")


def _compile(xsd_dir: Path, names: list[str]) -> etree.XMLSchema:
    imports = "".join(
        f'<xs:import namespace="{NAMESPACES[n]}" schemaLocation="{(xsd_dir / n).resolve().as_uri()}"/>'
        for n in names
    )
    entry = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:forlop:messaging" '
        f'elementFormDefault="qualified">{imports}</xs:schema>'
    )
    doc = etree.fromstring(entry.encode(), parser(), base_url=(xsd_dir.resolve() / "entry.xsd").as_uri())
    return etree.XMLSchema(doc)


def schema_set(xsd_dir: str | Path | None) -> SchemaSet:
    key = str(Path(xsd_dir).resolve()) if xsd_dir else ""
    with _lock:
        found = _cache.get(key)
        if found is None:
            found = _cache[key] = SchemaSet(Path(key) if key else None)
        return found
