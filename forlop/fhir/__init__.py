"""FHIR R4 at forlop's boundary: identifier systems and ids, conformance checks, the CapabilityStatement.

The conformance resources themselves (CodeSystems, ValueSets, StructureDefinitions) are
data in ``profiles/fhir``; the pathway mapping lives in ``services/pathway/domain/fhir_mapping.py``.
"""
