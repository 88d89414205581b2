"""What other services and the application may use of the messaging service; the rest is its own.

Status changes in; the e-messages a pathway's history owes, built, sent and tracked to their
AppRec receipts. Its Kafka entrypoint, relay, re-planner, HTTP blueprint and commands are here
for the application to wire, with the adapters the wiring picks from the settings.
"""

from __future__ import annotations

from services.messaging.adapters.apprec import build_apprec
from services.messaging.adapters.directory import directories_from
from services.messaging.adapters.schemas import schema_set
from services.messaging.adapters.transport import Transport, make_transport
from services.messaging.adapters.xml_build import Sender
from services.messaging.deps import MessagingDeps
from services.messaging.domain.model import MessageStatus
from services.messaging.domain.owed import withdrawn_registrations
from services.messaging.entrypoints.cli import CliContext, add_commands
from services.messaging.entrypoints.http import messages_bp
from services.messaging.entrypoints.kafka import messaging_handler
from services.messaging.handlers import StatusChange, handle_parsed_status_changes
from services.messaging.prebuild import PrebuiltMessage, prebuild_messages, prebuilt_builder
from services.messaging.relay import Relay
from services.messaging.replan import CAUSE as REPLAN_CAUSE
from services.messaging.replan import Replanner

__all__ = [
    "REPLAN_CAUSE",
    "CliContext",
    "MessageStatus",
    "MessagingDeps",
    "PrebuiltMessage",
    "Relay",
    "Replanner",
    "Sender",
    "StatusChange",
    "Transport",
    "add_commands",
    "build_apprec",
    "directories_from",
    "handle_parsed_status_changes",
    "make_transport",
    "messages_bp",
    "messaging_handler",
    "prebuild_messages",
    "prebuilt_builder",
    "schema_set",
    "withdrawn_registrations",
]
