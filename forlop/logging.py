"""Structured JSON logs with a correlation id, and no personal data.

Fødselsnummer/D-nummer (any run of 11 digits or more) are masked by a filter on every record,
so a careless log call cannot leak one. Names never enter the event formats.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
from datetime import UTC, datetime

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# A run of 11 ASCII digits or more: a fødselsnummer, or one hidden in a longer run (a vendor's id, a
# UUID segment), is masked whole. Shared by every place that keeps national ids out of text.
NATIONAL_ID_RUN = re.compile(r"(?<![0-9])[0-9]{11,}(?![0-9])")
# The mask token's digest in letters only, so no token is itself a run of digits.
_LETTERS = str.maketrans("0123456789", "ghijklmnop")


# Keyed, so a token cannot be reversed by hashing every possible fødselsnummer. Set FORLOP_LOG_MASK_KEY
# (the same secret in every replica) to correlate one patient's lines across processes; without it the key
# is random per process and tokens correlate only within one process.
_MASK_KEY = (os.environ.get("FORLOP_LOG_MASK_KEY") or "").encode() or secrets.token_bytes(32)


def mask_national_id(value: str) -> str:
    """A stable, non-identifying token for an 11-digit id: lets logs correlate, reveals nothing."""
    digest = hmac.new(_MASK_KEY, value.encode(), hashlib.sha256).hexdigest()[:12].translate(_LETTERS)
    return f"***********#{digest}"


def mask_text(text: str) -> str:
    return NATIONAL_ID_RUN.sub(lambda m: mask_national_id(m.group(0)), text)


class MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = mask_text(msg)
        record.args = None
        for key, value in list(vars(record).items()):
            if key.startswith("ctx_") and not isinstance(value, int | float | bool | type(None)):
                setattr(record, key, mask_text(value if isinstance(value, str) else json.dumps(value, default=str)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id.get()
        if cid:  # a client's or a vendor's id (eSP meldingsId): masked like every other field
            doc["correlation_id"] = mask_text(str(cid)[:200])
        for key, value in vars(record).items():
            if key.startswith("ctx_"):
                doc[key[4:]] = value
        if record.exc_info:
            doc["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


def set_mask_key(key: str | None) -> None:
    global _MASK_KEY
    if key:
        _MASK_KEY = key.encode()


def configure_logging(level: str = "INFO", fmt: str = "json", stream=None, mask_key: str | None = None) -> None:
    set_mask_key(mask_key)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("kafka").setLevel("WARNING")
    logging.getLogger("werkzeug").setLevel("WARNING")


def ctx(**fields: object) -> dict[str, object]:
    """Extra fields for a log call: `log.info("stored", extra=ctx(pathway=key))`."""
    return {f"ctx_{k}": v for k, v in fields.items()}
