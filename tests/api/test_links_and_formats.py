"""Links from the public base URL only (never the Host header), trusted proxies, and the one format: JSON."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from app.export import export_bundle
from forlop.clock import parse_time
from forlop.config import ConfigError, load_settings
from tests.api.conftest import loaded_client

AS_OF = parse_time("2026-01-05T10:00:00+01:00")


_client = loaded_client


def _urls(body: dict) -> list[str]:
    """Every URL the server wrote into a Bundle or CapabilityStatement."""
    urls = [link["url"] for link in body.get("link", [])]
    urls += [e["fullUrl"] for e in body.get("entry", []) if "fullUrl" in e]
    if "implementation" in body:
        urls.append(body["implementation"]["url"])
    return urls


def _everything(client, headers: dict, environ: dict | None = None) -> list[str]:
    urls = []
    for path in ("/fhir/metadata", "/fhir/Task?_count=2", "/fhir/EpisodeOfCare?_count=2&_offset=1",
                 "/fhir/Organization"):
        resp = client.get(path, headers=client.read | headers, environ_base=environ or {})
        assert resp.status_code == 200, resp.json
        urls += _urls(resp.json)
    assert any("_cursor=" in u for u in urls) and any("_offset=0" in u for u in urls)  # next and previous
    return urls


def test_links_come_from_the_public_base_url_never_the_host_header(store, tmp_path, contracts_dir):
    client = _client(store, tmp_path, contracts_dir, FORLOP_PUBLIC_BASE_URL="https://forlop.helse.example/api/")
    hostile = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
               "Forwarded": "host=evil.example;proto=http", "X-Forwarded-Prefix": "/evil"}
    urls = _everything(client, hostile, {"REMOTE_ADDR": "10.0.0.7"})
    assert urls and all(u.startswith("https://forlop.helse.example/api/fhir/") or
                        u == "https://forlop.helse.example/api/fhir" for u in urls), urls
    assert not any("evil" in u for u in urls)

    out = io.StringIO()
    export_bundle(client.rt, AS_OF, out)
    entries = json.loads(out.getvalue())["entry"]
    assert entries and all(e["fullUrl"].startswith("https://forlop.helse.example/api/fhir/") for e in entries)


def test_without_a_setting_links_are_on_localhost_and_the_port_whatever_the_host(store, tmp_path, contracts_dir):
    client = _client(store, tmp_path, contracts_dir, FORLOP_HTTP_PORT="8099")
    urls = _everything(client, {"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
                       {"REMOTE_ADDR": "10.0.0.7"})
    assert all(u.startswith("http://localhost:8099/fhir") for u in urls), urls


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.0.2.9"])
def test_forwarded_headers_only_from_a_trusted_proxy(store, tmp_path, contracts_dir, peer):
    client = _client(store, tmp_path, contracts_dir, FORLOP_TRUSTED_PROXIES="10.1.0.0/16, 2001:db8::/32")
    trusted = peer.startswith("10.1.")
    x_forwarded = {"Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "fhir.example.no",
                   "X-Forwarded-Prefix": "/forlop"}
    urls = _everything(client, x_forwarded, {"REMOTE_ADDR": peer})
    expected = "https://fhir.example.no/forlop/fhir" if trusted else "http://localhost:8080/fhir"
    assert all(u.startswith(expected) for u in urls), urls

    forwarded = {"Forwarded": 'for=192.0.2.60;proto=https;host="fhir.example.no:8443", for=10.1.0.1'}
    urls = _everything(client, forwarded, {"REMOTE_ADDR": peer})
    expected = "https://fhir.example.no:8443/fhir" if trusted else "http://localhost:8080/fhir"
    assert all(u.startswith(expected) for u in urls), urls

    # a trusted proxy's header that is not a host, scheme or path is left out, never passed on
    odd = {"X-Forwarded-Host": "evil.example/@x", "X-Forwarded-Proto": "javascript", "X-Forwarded-Prefix": "/a?b"}
    assert all(u.startswith("http://localhost:8080/fhir") for u in _everything(client, odd, {"REMOTE_ADDR": peer}))


@pytest.mark.parametrize(("name", "value"), [
    ("FORLOP_PUBLIC_BASE_URL", "ftp://x.example"), ("FORLOP_PUBLIC_BASE_URL", "https://x.example/?a=1"),
    ("FORLOP_PUBLIC_BASE_URL", "https://user:pw@x.example"), ("FORLOP_PUBLIC_BASE_URL", "https://x.example:99999"),
    ("FORLOP_PUBLIC_BASE_URL", "https:///path"), ("FORLOP_TRUSTED_PROXIES", "10.0.0.0/8,not-a-net"),
])
def test_bad_link_settings_fail_at_start_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_settings_default_and_trailing_slash():
    assert load_settings({}).fhir_base_url == "http://localhost:8080/fhir"
    settings = load_settings({"FORLOP_PUBLIC_BASE_URL": "https://a.example/x/"})
    assert settings.fhir_base_url == "https://a.example/x/fhir"
    assert replace(settings, public_base_url="").fhir_base_url == "http://localhost:8080/fhir"


@pytest.mark.parametrize(("query", "headers", "status"), [
    ("_format=xml", {}, 406),
    ("_format=application/fhir%2Bxml", {}, 406),
    ("_format=text/html", {}, 406),
    ("", {"Accept": "application/fhir+xml"}, 406),
    ("", {"Accept": "application/xml, text/html"}, 406),
    ("", {"Accept": "application/fhir+json;q=0, application/fhir+xml"}, 406),
    ("_format=json", {"Accept": "application/fhir+xml"}, 200),  # _format overrides Accept
    ("_format=application/fhir%2Bjson", {}, 200),
    ("_format=application/json", {}, 200),
    ("", {"Accept": "application/fhir+xml;q=0.9, application/fhir+json"}, 200),
    ("", {"Accept": "*/*"}, 200),
    ("", {"Accept": "application/json"}, 200),
    ("", {}, 200),
])
@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/Task", "/fhir/Organization/{org}"])
def test_only_json_is_served_another_format_is_406(store, tmp_path, contracts_dir, path, query, headers, status):
    client = _client(store, tmp_path, contracts_dir)
    org = client.get("/fhir/Organization", headers=client.read).json["entry"][0]["resource"]["id"]
    resp = client.get(f"{path.format(org=org)}?{query}", headers=client.read | headers)
    assert resp.status_code == status, resp.json
    assert resp.content_type.startswith("application/fhir+json")
    if status == 406:
        assert resp.json["resourceType"] == "OperationOutcome"
        assert resp.json["issue"][0]["code"] == "not-supported"


def test_pretty_indents_and_a_bad_count_or_pretty_is_400(store, tmp_path, contracts_dir):
    client = _client(store, tmp_path, contracts_dir)
    org = client.get("/fhir/Organization", headers=client.read).json["entry"][0]["resource"]["id"]
    compact = client.get(f"/fhir/Organization/{org}", headers=client.read)
    indented = client.get(f"/fhir/Organization/{org}?_pretty=true", headers=client.read)
    assert b"\n" not in compact.data and b'\n  "resourceType"' in indented.data
    assert indented.json == compact.json
    assert client.get("/fhir/metadata?_pretty=false").data.count(b"\n") == 0
    bad = client.get(f"/fhir/Organization/{org}?_pretty=yes", headers=client.read)
    assert bad.status_code == 400 and bad.json["issue"][0]["expression"] == ["_pretty"]
    negative = client.get("/fhir/Task?_count=-1", headers=client.read)
    assert negative.status_code == 400 and negative.json["issue"][0]["expression"] == ["_count"]
