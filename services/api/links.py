"""Where the API's links point: the public base URL, never the request's Host header.

Every `fullUrl`, Bundle link and the CapabilityStatement's `implementation.url` start with the FHIR
base this module gives. It is `FORLOP_PUBLIC_BASE_URL` + "/fhir" when that is set. Otherwise a
reverse proxy may say how the client reached it (`Forwarded`, or `X-Forwarded-Proto`, `-Host` and
`-Prefix`), but only a proxy whose address is in `FORLOP_TRUSTED_PROXIES`: from any other peer those
headers are the client's own words and are ignored, as the Host header always is (a client that
sends `Host: evil.example` must not get links to evil.example handed to the next client, a cache
or a log). Without either, links are http://localhost:<FORLOP_HTTP_PORT>/fhir/...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from forlop.config import Settings

_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}"
                   r"[A-Za-z0-9])?(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~\-]+)*/?")
_PROTOS = ("http", "https")


def fhir_base(settings: Settings, environ: Mapping[str, Any]) -> str:
    """The FHIR base URL (no trailing slash) to build this request's links on."""
    if settings.public_base_url or not settings.trusted_proxies or not _trusted(settings, environ):
        return settings.fhir_base_url
    proto, host, prefix = _forwarded(environ)
    if proto is None and host is None and prefix is None:
        return settings.fhir_base_url
    default = urlsplit(settings.fhir_base_url)
    return f"{proto or default.scheme}://{host or default.netloc}{(prefix or '').rstrip('/')}/fhir"


def _trusted(settings: Settings, environ: Mapping[str, Any]) -> bool:
    try:
        peer = ip_address(str(environ.get("REMOTE_ADDR") or ""))
    except ValueError:
        return False
    return any(peer in net for net in settings.trusted_proxies)


def _forwarded(environ: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(proto, host, prefix) as the nearest-to-the-client entry of the headers gives them; a value
    that is not a scheme, a host[:port] or a path is left out (None), never passed on."""
    proto = host = prefix = None
    forwarded = environ.get("HTTP_FORWARDED")
    if forwarded:  # RFC 7239: the first element is the one the first proxy wrote
        for pair in forwarded.split(",")[0].split(";"):
            key, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if key.lower() == "proto":
                proto = value.lower()
            elif key.lower() == "host":
                host = value
    proto = proto or _first(environ.get("HTTP_X_FORWARDED_PROTO"), lower=True)
    host = host or _first(environ.get("HTTP_X_FORWARDED_HOST"))
    prefix = _first(environ.get("HTTP_X_FORWARDED_PREFIX"))
    return (proto if proto in _PROTOS else None,
            host if host and _HOST.fullmatch(host) else None,
            prefix if prefix and _PREFIX.fullmatch(prefix) else None)


def _first(value: str | None, *, lower: bool = False) -> str | None:
    if not value:
        return None
    first = value.split(",")[0].strip()
    return first.lower() if lower else first
