"""`forlop messages list|show|retry`: each a few lines into the repository or the relay.

Added to the `forlop` command by the application (``add_commands(sub, context)``): each command
asks `context` for what it works with (`CliContext`, built from the settings by the
application's composition root).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from forlop.clock import Clock
from forlop.config import Settings
from forlop.storage import Store
from services.messaging import metrics
from services.messaging.adapters import repository
from services.messaging.apply import release_held
from services.messaging.deps import MessagingDeps
from services.messaging.relay import Relay
from services.messaging.views import message_view


@dataclass(frozen=True)
class CliContext:
    """What the message commands work with: the store (migrated), the clock, messaging's deps and relay."""

    store: Store
    clock: Clock
    deps: MessagingDeps
    relay: Relay


ContextFactory = Callable[[Settings], CliContext]


def cmd_list(args: argparse.Namespace, settings: Settings, context: ContextFactory) -> int:
    ctx = context(settings)
    with ctx.store.read() as conn:
        rows = repository.list_messages(conn, args.status, args.pathway, limit=100_000)
    # The JSON line is a contract for scripts: exactly these keys. Notes show in the text form and `show`.
    keys = ("id", "pathway", "recipientHerId", "role", "trigger", "messageType", "status", "attempts")
    try:
        _print_rows(rows, keys, args.json)
    except BrokenPipeError:  # `forlop messages list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_rows(rows: list[dict[str, Any]], keys: tuple[str, ...], as_json: bool) -> None:
    for row in rows:
        view = message_view(row)
        if as_json:
            print(json.dumps({k: view[k] for k in keys}, ensure_ascii=False))
        else:
            reason = f"  ({view['statusReason']})" if view["statusReason"] else ""
            notes = "".join(f"  [note: {n}]" for n in view["notes"])
            print(f"{view['id']}  {view['pathway']:<16} {view['role']:<12} {view['trigger']:<15} "
                  f"{view['status']:<12} {view['attempts']}{reason}{notes}")


def cmd_show(args: argparse.Namespace, settings: Settings, context: ContextFactory) -> int:
    ctx = context(settings)
    with ctx.store.read() as conn:
        row = repository.get(conn, args.id)
        receipts = repository.receipts_for(conn, args.id) if row else []
    if row is None:
        print(f"forlop: no message {args.id}")
        return 1
    view = message_view(row)
    for k, v in view.items():
        print(f"{k}: {v}")
    for r in receipts:
        print(f"receipt: {r['status']} ({r['outcome']}) {r['received_at'].isoformat()} {r['errors'] or ''}")
    if row.get("xml"):
        print(row["xml"])
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings, context: ContextFactory) -> int:
    """Held: resolve the recipient again and release. Failed/rejected: queue again with the same MsgId.

    Never a message marked `sentWithoutConsentInForce`: the history says the patient had not consented.
    """
    ctx = context(settings)
    deps = ctx.deps
    now = ctx.clock()
    with ctx.store.transaction() as conn:
        row = repository.get(conn, args.id, lock=True)
        if row is None:
            print(f"forlop: no message {args.id}")
            return 1
        if row["status"] == "held":
            released = release_held(conn, now, deps, [args.id])
            if not released:
                print(f"forlop: {args.id} is still held: {repository.get(conn, args.id)['status_reason']}")
                return 1
        elif (row.get("details") or {}).get("sentWithoutConsentInForce"):
            print(f"forlop: {args.id} left without consent in force (registered later); it is not sent again")
            return 1
        elif row["status"] in ("failed", "rejected") and row.get("xml"):
            repository.update_message(conn, args.id, status="queued", status_reason="retry requested", attempts=0,
                                      next_attempt_at=None, settled_at=None)
            metrics.transitions.labels("queued").inc()
        else:
            print(f"forlop: {args.id} is {row['status']}; only held, failed or rejected messages can be retried")
            return 1
    sent = ctx.relay.run_once()
    with ctx.store.read() as conn:
        print(f"{args.id}: {repository.get(conn, args.id)['status']} (relay pass handled {sent})")
    return 0


def add_commands(subparsers: Any, context: ContextFactory) -> None:
    p = subparsers.add_parser("messages", help="the e-messages to GPs, referrers and municipalities")
    sub = p.add_subparsers(dest="messages_command", required=True)
    ls = sub.add_parser("list", help="list messages")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.add_argument("--status", choices=("queued", "sent", "acknowledged", "rejected", "failed", "held", "suppressed"))
    ls.add_argument("--pathway", help="the source system's pathway id")
    ls.set_defaults(func=partial(cmd_list, context=context))
    show = sub.add_parser("show", help="one message with its receipts and XML")
    show.add_argument("id")
    show.set_defaults(func=partial(cmd_show, context=context))
    retry = sub.add_parser("retry", help="release a held message or resend a failed one")
    retry.add_argument("id")
    retry.set_defaults(func=partial(cmd_retry, context=context))
