"""The FHIR API's one format, JSON: what `_format`, `Accept` and `_pretty` may ask for.

A client that asks for XML (or anything else but JSON) gets a 406 OperationOutcome instead of JSON it
did not ask for: FHIR's `_format` overrides `Accept`, and both name a MIME type or a short name.
`_pretty=true` indents the JSON (the default, compact, is what a machine wants).
"""

from __future__ import annotations

import orjson
from flask import Response
from werkzeug.datastructures import MIMEAccept, MultiDict

from forlop.fhir.outcome import FHIR_JSON, error
from forlop.http import BadParameter, one_value, shown

# _format values (and Accept types) that mean JSON: FHIR's short name, its MIME type, and the R3-era one
JSON_FORMATS = ("json", FHIR_JSON, "application/json", "application/json+fhir")
JSON_TYPES = (FHIR_JSON, "application/json", "application/json+fhir")
PRETTY = {"true": True, "false": False}


def unacceptable(args: MultiDict[str, str], accept: MIMEAccept, accept_given: bool) -> Response | None:
    """406 when the request asks for a format other than JSON (by `_format`, else by `Accept`); else None."""
    raw = one_value(args, "_format")
    if raw is not None:
        if raw.split(";")[0].strip().lower() in JSON_FORMATS:
            return None
        return error(406, "not-supported", f"_format={shown(raw)}: this server speaks FHIR JSON only "
                     f"(_format=json or {FHIR_JSON})", "_format")
    if accept_given and accept.best_match(JSON_TYPES) is None:
        return error(406, "not-supported", f"Accept: {shown(accept.to_header())} allows no format this server "
                     f"has; it answers {FHIR_JSON} only")
    return None


def pretty(args: MultiDict[str, str]) -> bool:
    """Whether `_pretty` asks for indented JSON; a value other than true or false is a BadParameter."""
    raw = one_value(args, "_pretty")
    if raw is None:
        return False
    if raw not in PRETTY:
        raise BadParameter("_pretty", f"_pretty={shown(raw)}: use true or false")
    return PRETTY[raw]


def prettified(resp: Response) -> Response:
    """The FHIR JSON response, indented (two spaces)."""
    if resp.mimetype != FHIR_JSON or resp.direct_passthrough:
        return resp
    resp.set_data(orjson.dumps(orjson.loads(resp.get_data()), option=orjson.OPT_INDENT_2))
    return resp
