"""What one HTTP request may ask of the API, checked before any route runs.

Each limit is a setting (`HttpLimits.of`); past one the answer is an OperationOutcome naming it:
a URL (path and query) too long 414, header fields too large 431, a body too large 413, a NUL
character in the path 404 (no id holds one) or in a query parameter 400 (PostgreSQL text cannot
hold one). waitress enforces the same sizes a little above these, for what never reaches the app
(`forlop.wsgi`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Response
from werkzeug.datastructures import MultiDict

from forlop.config import Settings
from forlop.fhir.outcome import error


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_body_bytes: int
    max_records: int
    max_url_bytes: int
    max_header_bytes: int
    max_problems: int

    @staticmethod
    def of(settings: Settings) -> HttpLimits:
        return HttpLimits(settings.http_max_body_bytes, settings.http_max_records, settings.http_max_url_bytes,
                          settings.http_max_header_bytes, settings.http_max_problems)


def url_bytes(environ: Mapping[str, Any]) -> int:
    """The request target's length as sent (percent-escapes included), path and query."""
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if raw:
        return len(raw)
    return len(environ.get("SCRIPT_NAME", "")) + len(environ.get("PATH_INFO", "")) + len(
        environ.get("QUERY_STRING", "")) + 1


def header_bytes(environ: Mapping[str, Any]) -> int:
    """The header fields' size as sent, near enough: each "Name: value" and its line end."""
    size = 0
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            size += len(key) - 5 + len(value) + 4
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            size += len(key) + len(value) + 4
    return size


def refused(environ: Mapping[str, Any], path: str, args: MultiDict[str, str], limits: HttpLimits) -> Response | None:
    """The answer to a request past a limit, or None when it is within them all."""
    if (size := url_bytes(environ)) > limits.max_url_bytes:
        return error(414, "too-costly", f"the URL is {size} bytes long; at most {limits.max_url_bytes} "
                     "(send fewer search values per request)")
    if (size := header_bytes(environ)) > limits.max_header_bytes:
        return error(431, "too-costly", f"the header fields are {size} bytes; at most {limits.max_header_bytes}")
    length = environ.get("CONTENT_LENGTH") or ""
    if length.isascii() and length.isdigit() and int(length) > limits.max_body_bytes:
        return too_large(limits)
    if "\x00" in path:
        return error(404, "not-found", "no resource has a NUL character in its id or path")
    for name, value in args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "\\u0000")[:60]
            return error(400, "value", f"query parameter {shown!r} holds a NUL character", shown)
    return None


def too_large(limits: HttpLimits) -> Response:
    return error(413, "too-costly", f"the request body is larger than {limits.max_body_bytes} bytes; "
                 "split the batch")
