"""`forlop audit --patient <national id>`: who has accessed a patient's data, as the patient may ask."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time
from typing import TextIO

import orjson

from app.bootstrap import Runtime
from forlop import audit
from forlop.config import ConfigError
from forlop.fhir.audit_event import audit_event, outcome


def _bound(value: str | None, name: str, end: bool) -> datetime | None:
    """A --from/--to value: an instant, or a date (UTC) taken from its start or to its end."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time.max if end else time.min, UTC)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date (YYYY-MM-DD) or an ISO 8601 instant") from None


def print_accesses(rt: Runtime, patient: str, date_from: str | None, date_to: str | None, as_json: bool = False,
                   out: TextIO | None = None) -> int:
    out = out or sys.stdout
    key = audit.patient_key(patient)
    if key is None:
        print("forlop audit: --patient must be a national id (11 digits) or a Patient id", file=sys.stderr)
        return 2
    since, until = _bound(date_from, "--from", False), _bound(date_to, "--to", True)
    found: list[audit.Stored] = []
    after = 0
    with rt.store.read() as conn:
        while page := audit.records_for(conn, key, since, until, after_id=after, limit=1000):
            found += page
            after = page[-1].id
    if as_json:
        for s in found:
            out.write(orjson.dumps(audit_event(s.id, s.record)).decode() + "\n")
        return 0
    print(f"{len(found)} accesses to Patient/{key}", file=out)
    for s in found:
        r = s.record
        who = r.client_id or r.subject or "?"
        orgs = "/".join(o for o in (r.org_parent, r.org_child) if o)
        person = f" HPR {r.hpr_number}" if r.hpr_number else ""
        result = "ok" if outcome(r.status) == "0" else f"refused/failed ({r.status})"
        print(f"{r.recorded.isoformat(timespec='seconds')}  {who}{f' (org {orgs})' if orgs else ''}{person}  "
              f"{r.method} {r.route}  purpose {r.purpose}  {result}  {len(r.resources)} resources", file=out)
    return 0
