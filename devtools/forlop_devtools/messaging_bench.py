"""`forlop bench` messaging figure: build, validate against the XSDs and hand over N messages (directory transport)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.bootstrap import sender_from
from forlop.config import load_settings
from forlop_devtools.synthetic import generate
from services.ingest.domain.normalise import parse_vendor_event
from services.messaging.adapters.schemas import schema_set
from services.messaging.adapters.transport import DirectoryTransport
from services.messaging.deps import new_msg_id
from services.messaging.domain.model import Recipient, Role, Trigger
from services.messaging.render import build_xml


def messages_per_second(workdir: Path, count: int) -> dict[str, Any]:
    settings = load_settings({"FORLOP_DATA_DIR": str(workdir)})
    schemas = schema_set(settings.xsd_dir)
    events = [parse_vendor_event("dips", raw) for raw in generate("dips", 40, 3, as_of=datetime.now(UTC))]
    events = [e for e in events if e.code] or events
    transport = DirectoryTransport(workdir / "bench-messages" / "outbox", workdir / "bench-messages" / "inbox")
    sender = sender_from(settings)
    recipient = {"her_id": "9980001", "name": "Fastlege"}
    started = time.perf_counter()
    for i in range(count):
        ev = events[i % len(events)]
        msg_id = new_msg_id()
        xml = build_xml(
            msg_id=msg_id, trigger=Trigger.DECISION, role=Role.GP,
            details={"event": ev.to_dict(), "recipient": recipient, "outcome": "P", "phase": "treatment"},
            sender=sender, gen_date=datetime.now(UTC), schemas=schemas,
        )
        transport.send(msg_id, xml.encode("utf-8"))
    seconds = time.perf_counter() - started
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "messages_per_s": round(count / max(seconds, 1e-9), 1),
        "validated": schemas.enabled,
        "recipient": Recipient(**recipient).her_id,
    }
