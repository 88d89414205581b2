"""What the handlers and the relay need, wired once by the composition root (`app.bootstrap.build_messaging`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forlop.clock import Clock, system_clock
from forlop.config import Topics
from services.messaging.adapters.schemas import SchemaSet
from services.messaging.adapters.xml_build import Sender
from services.messaging.domain.model import GpDirectory, MunicipalityDirectory
from services.messaging.domain.triggers import TriggerBook, trigger_book


def new_msg_id() -> str:
    return str(uuid.uuid4())


@dataclass
class MessagingDeps:
    topics: Topics
    schemas: SchemaSet
    municipal: MunicipalityDirectory
    gps: GpDirectory
    sender: Sender  # organisation level; the unit comes from each message's event
    id_factory: Callable[[], str] = new_msg_id
    clock: Clock = system_clock
    apprec_timeout_s: int = 3600
    max_attempts: int = 5
    transport_name: str = "directory"
    triggers: TriggerBook = field(default_factory=trigger_book)  # who is owed what (profiles/messaging/triggers.json)
    extra: dict[str, Any] = field(default_factory=dict)
