"""What every answer of the API carries and every client is held to, beside its token.

- The client's correlation id (X-Correlation-Id) is used only when it is 1-64 characters of
  ``[A-Za-z0-9._:-]`` and holds no 11-digit run (a national id); anything else is replaced by a
  generated id, not refused: a correlation header is a convenience of the caller's, and a request
  that is right in every other way should not fail over it. The id used is echoed in the answer.
- Security headers on every answer: ``Cache-Control: no-store`` (answers carry patient data; a
  shared cache or the browser's disk must not keep them), nosniff, no referrer, a CSP that loads
  nothing, and HSTS when clients reach the API over https (FORLOP_PUBLIC_SCHEME=https: the ingress
  terminates TLS, and waitress drops the X-Forwarded-Proto of a proxy it was not told to trust).
- An error body never repeats an 11-digit run from the request: it is masked as the logs mask it.
- Per-client rate limits (FORLOP_RATE_LIMIT_PER_S, FORLOP_RATE_LIMIT_BURST): a token bucket per
  client_id in each API process; past it, 429 with Retry-After and an OperationOutcome.
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from flask import Response

from forlop.config import Settings
from forlop.fhir.outcome import error
from forlop.logging import NATIONAL_ID_RUN, mask_text

CORRELATION_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'",
}
HSTS = "max-age=31536000; includeSubDomains"
MAX_BUCKETS = 10_000  # clients remembered per process; the least recently seen is forgotten first


def correlation_id_of(raw: str | None) -> str:
    """The client's id when it is safe to log and echo as it is; a generated one otherwise."""
    if raw and CORRELATION_ID.fullmatch(raw) and not NATIONAL_ID_RUN.search(raw):
        return raw
    while NATIONAL_ID_RUN.search(generated := uuid.uuid4().hex):  # one the logs keep as it is
        pass
    return generated


def secure(resp: Response, https: bool) -> Response:
    for name, value in SECURITY_HEADERS.items():
        resp.headers[name] = value
    if https:
        resp.headers["Strict-Transport-Security"] = HSTS
    if resp.status_code >= 400 and not resp.direct_passthrough and resp.mimetype.endswith("json"):
        body = resp.get_data(as_text=True)
        if NATIONAL_ID_RUN.search(body):
            resp.set_data(mask_text(body))
    return resp


class RateLimiter:
    """A token bucket per client: `rate` requests a second, up to `burst` saved up."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._now = now
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    @staticmethod
    def of(settings: Settings) -> RateLimiter | None:
        if settings.rate_limit_per_s <= 0:
            return None
        return RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst or settings.rate_limit_per_s)

    def wait_s(self, client: str) -> float:
        """0 when the client may go on now (and the request is counted); else the seconds until it may."""
        now = self._now()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        return wait


def too_many(wait_s: float) -> Response:
    seconds = max(1, math.ceil(wait_s))
    resp = error(429, "throttled", f"too many requests from this client; try again in {seconds} s")
    resp.headers["Retry-After"] = str(seconds)
    return resp
