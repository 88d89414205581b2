"""Patient ids are keyed pseudonyms: stable for one key, not derivable from the fødselsnummer alone."""

from __future__ import annotations

import uuid

from forlop.fhir import ids

FNR = "13837033319"  # synthetic (month + 80)


def test_patient_ids_are_keyed_and_stable():
    default = ids.patient_id(FNR)
    assert default == ids.patient_id(FNR)
    assert default != ids.resource_id("Patient", FNR)  # not the unkeyed hash of the number
    assert default != str(uuid.uuid5(ids.NAMESPACE, FNR))
    try:
        ids.set_patient_id_key("a production secret")
        keyed = ids.patient_id(FNR)
        assert keyed != default and keyed == ids.patient_id(FNR)
    finally:
        ids.set_patient_id_key(None)
    assert ids.patient_id(FNR) == default
