"""JSON as forlop stores and publishes it (columns, outbox records), with no storage import: the
services' pure code builds outbox values with it too."""

from __future__ import annotations

import orjson


def json_text(value: object) -> str:
    """JSON columns and records: orjson, several times faster than json on statuses and FHIR resources
    (a fifth of the scanner's and replay's time went to json); UTF-8 text like ensure_ascii=False."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
