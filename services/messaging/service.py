"""Bootstrap of messaging: settings -> schemas, address registers, transport, relay."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forlop.clock import Clock
from forlop.config import ConfigError
from forlop.storage import Store
from services.messaging.adapters.directory import directories_from
from services.messaging.adapters.schemas import schema_set
from services.messaging.adapters.transport import Transport, make_transport
from services.messaging.adapters.xml_build import Sender
from services.messaging.deps import MessagingDeps
from services.messaging.relay import Relay

log = logging.getLogger(__name__)

SYNTHETIC_SENDER_HER_ID = "9970001"  # 997xxxx: no real party has it
SYNTHETIC_SENDER_ORG_NUMBER = "983974899"  # the synthetic generator's health trust


def _setting(settings: Any, attr: str, env: str, default: Any) -> Any:
    return getattr(settings, attr, None) or os.environ.get(env) or default


def sender_from(settings: Any) -> Sender:
    return Sender(
        org_name=_setting(settings, "sender_org_name", "FORLOP_SENDER_ORG_NAME", "Helseforetak (syntetisk)"),
        org_her_id=str(_setting(settings, "sender_her_id", "FORLOP_SENDER_HER_ID", SYNTHETIC_SENDER_HER_ID)),
        org_number=str(_setting(settings, "sender_org_number", "FORLOP_SENDER_ORG_NUMBER", SYNTHETIC_SENDER_ORG_NUMBER)),
        unit_name="",
        unit_her_id="",
    )


@dataclass
class Messaging:
    deps: MessagingDeps
    relay: Relay
    transport: Transport

    def poll_receipts(self) -> int:
        return self.relay.poll_receipts()


def build_deps(settings: Any, clock: Clock) -> MessagingDeps:
    xsd_dir = settings.xsd_dir
    if not Path(xsd_dir).is_dir():
        raise ConfigError(f"FORLOP_XSD_DIR={xsd_dir!r} is not a directory")
    municipal, gps = directories_from(settings)
    return MessagingDeps(
        topics=settings.topics,
        schemas=schema_set(xsd_dir),
        municipal=municipal,
        gps=gps,
        sender=sender_from(settings),
        clock=clock,
        apprec_timeout_s=int(getattr(settings, "apprec_timeout_s", 3600)),
        max_attempts=int(getattr(settings, "max_send_attempts", 5)),
        transport_name=getattr(settings, "transport", "kafka"),
    )


def build_messaging(settings: Any, store: Store, clock: Clock) -> Messaging:
    deps = build_deps(settings, clock)
    transport = make_transport(settings)
    return Messaging(deps, Relay(store, transport, deps), transport)
