"""The official schemas shipped in `profiles/xsd` are the whole set validation needs.

Every publisher's sample under `profiles/xsd/samples` (AppRec, Dialogmelding 1.0 and 1.1, PLO 1.6
Pasientlogistikk) validates against the shipped set, resolved without the network; a file missing
from the import closure would fail here. The default settings use this set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from forlop.config import load_settings, shipped_xsd_dir
from services.messaging.adapters.schemas import NAMESPACES, InvalidMessage, schema_set
from services.messaging.adapters.xmlsafe import parser

SHIPPED = Path(shipped_xsd_dir())
SAMPLES = sorted((SHIPPED / "samples").rglob("*.xml"))


def test_the_default_is_the_shipped_set_with_every_standard() -> None:
    assert Path(load_settings({}).xsd_dir) == SHIPPED
    assert schema_set(SHIPPED).present == set(NAMESPACES)


def test_the_samples_cover_every_standard_sent_or_received() -> None:
    kinds = {p.parent.name for p in SAMPLES}
    assert kinds == {"apprec", "dialogmelding", "pasientlogistikk"} and len(SAMPLES) >= 12


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_official_sample_validates_against_the_shipped_set(sample: Path) -> None:
    doc = etree.fromstring(sample.read_bytes(), parser())
    schema_set(SHIPPED).validate(doc)


def test_a_broken_sample_is_refused() -> None:
    doc = etree.fromstring((SHIPPED / "samples" / "apprec" / "apprec-eksempel.xml").read_bytes(), parser())
    status = doc.find(".//{*}Status")
    status.getparent().remove(status)
    with pytest.raises(InvalidMessage):
        schema_set(SHIPPED).validate(doc)
