"""The tenant registry: checked at start, with errors that name the entry and the problem."""

from __future__ import annotations

import pytest

from forlop.config import ConfigError, load_settings
from forlop.tenants import Reach, load_tenants, parse_registry


def test_yaml_and_json_registries_give_the_same_tenants():
    yaml_text = """
tenants:
  - orgNumber: "983974899"
    kind: hospital
    units: ["8140001", "8140002"]
  - {orgNumber: "942110464", kind: municipality, municipality: "5001"}
  - {orgNumber: "983544622", kind: national}
"""
    json_text = ('{"tenants": [{"orgNumber": "983974899", "kind": "hospital", "units": ["8140001", "8140002"]},'
                 '{"orgNumber": "942110464", "kind": "municipality", "municipality": "5001"},'
                 '{"orgNumber": "983544622", "kind": "national"}]}')
    a = parse_registry(yaml_text, "a.yaml", production=True)
    b = parse_registry(json_text, "b.json", production=True)
    assert a.tenants == b.tenants
    assert a.tenants["983974899"].reach == Reach(units=("8140001", "8140002"))
    assert a.tenants["942110464"].reach == Reach(municipality="5001")
    assert a.find(None, "942110464").kind == "municipality" and a.find("000000000") is None


@pytest.mark.parametrize(("text", "named"), [
    ("tenants: [", "not YAML or JSON"),
    ("{}", "'tenants' is a required property"),
    ('tenants: [{orgNumber: "98397489", kind: hospital, units: ["1"]}]', "tenants/0/orgNumber"),
    ('tenants: [{orgNumber: "983974899", kind: pharmacy}]', "tenants/0/kind"),
    ('tenants: [{orgNumber: "983974899", kind: hospital}]', "'units' is a required property"),
    ('tenants: [{orgNumber: "983974899", kind: municipality}]', "'municipality' is a required property"),
    ('tenants: [{orgNumber: "983974899", kind: national, units: ["1"]}]', "tenants/0"),
    ('tenants: [{orgNumber: "983974899", kind: hospital, units: ["81x"]}]', "tenants/0/units/0"),
    ('tenants: [{orgNumber: "983974899", kind: national}, {orgNumber: "983974899", kind: national}]',
     "tenants/1: organisation 983974899 is listed twice"),
    ('tenants: [{orgNumber: "999999999", kind: development}]', "embedded mode only"),
])
def test_a_bad_registry_is_refused_naming_the_entry(text, named):
    with pytest.raises(ConfigError) as err:
        parse_registry(text, "/etc/forlop/tenants.yaml", production=True)
    assert "FORLOP_TENANTS=/etc/forlop/tenants.yaml" in str(err.value) and named in str(err.value), str(err.value)


def test_the_registry_file_is_read_at_start(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_tenants(load_settings({"FORLOP_DATA_DIR": str(tmp_path), "FORLOP_TENANTS": str(tmp_path / "none")}))
    with pytest.raises(ConfigError, match="FORLOP_TENANTS is required in production"):
        load_tenants(load_settings({"FORLOP_MODE": "production", "FORLOP_DATA_DIR": str(tmp_path)}))
    demo = load_tenants(load_settings({"FORLOP_DATA_DIR": str(tmp_path)}))
    assert demo.source.endswith("demo.yaml") and demo.find("999999999").everything
