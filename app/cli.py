"""`forlop`: the command line. Each command is a few lines that call into the application or a service.

The services add their own commands (`messages`, `indicators`, `quality`) through their public
modules; a development package adds more (`run`, `generate`, `bench`) through the entry-point
group `forlop.commands` (`forlop-devtools`, not part of the image).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from app import dlq
from app.audit import print_accesses
from app.bootstrap import open_runtime
from app.export import export_bundle
from app.replay.pipeline import replay_file
from app.replay.workers import default_count
from app.serve import SERVICES, serve_forever
from app.timeline import print_timeline
from forlop import audit, dead_letters
from forlop.auth import ALL_SCOPES, mint_dev_token
from forlop.clock import Clock, FixedClock, parse_time
from forlop.config import ConfigError, Settings, check_production, load_settings
from forlop.logging import configure_logging
from forlop.storage import Store
from forlop.tenants import DEVELOPMENT_ORG_NUMBER, load_tenants
from services.messaging import public as messaging
from services.pathway import public as pathway

COMMANDS_GROUP = "forlop.commands"  # entry points: callables that add commands to `forlop`'s subparsers


def _as_of(value: str | None, settings: Settings) -> Clock | None:
    if value:
        return FixedClock(parse_time(value))
    return FixedClock(settings.clock) if settings.clock else None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    check_production(settings, args.service)  # every missing trust setting named, before anything opens
    return serve_forever(open_runtime(settings, migrate=False), args.service)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = Store(settings.database_url).migrate()
    print(f"schema migrations applied: {applied or 'none (up to date)'}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    rt = open_runtime(settings, sqlite_cache_mb=args.cache_mb or None)
    clock = _as_of(args.as_of, settings)
    if clock:
        rt.clock = clock
    counts = replay_file(rt, args.source, Path(args.file), batch_size=args.batch_size,
                         progress=None if args.quiet else sys.stderr, workers=args.workers)
    print(counts.line())
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    rt = open_runtime(settings)
    clock = _as_of(args.as_of, settings) or rt.clock
    as_of = clock()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fp:
            n = export_bundle(rt, as_of, fp)
        print(f"{n} resources written to {args.out}", file=sys.stderr)
    else:
        export_bundle(rt, as_of, sys.stdout)
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    rt = open_runtime(settings)
    statuses = None if args.all else dead_letters.UNRESOLVED
    if args.dlq_command == "list":
        with rt.store.read() as conn:
            rows = dead_letters.list_dead_letters(conn, statuses, stage=args.stage)
        for row in rows:
            if args.json:
                print(json.dumps(_dead_letter_json(row), ensure_ascii=False))
            else:
                rules = ", ".join(f"{r['field']}: {r['rule']}" for r in row["reasons"])
                print(f"{row['id']:>6}  {row['status']:<14} {row['stage']:<9} {row['source']:<9} "
                      f"{row['origin']:<40} {rules}")
        if not args.json:
            print(f"{len(rows)} dead letter(s)", file=sys.stderr)
        return 0
    ids: list[int]
    if args.id is not None:
        ids = [args.id]
    elif args.all:
        with rt.store.read() as conn:
            ids = [row["id"] for row in dead_letters.list_dead_letters(
                conn, dead_letters.UNRESOLVED, stage=args.stage, limit=1_000_000)]
    else:
        print("forlop dlq replay: give an ID or --all", file=sys.stderr)
        return 2
    failed = 0
    for dl_id in ids:
        try:
            outcome = dlq.replay(rt, dl_id)
        except KeyError as exc:
            print(str(exc).strip("'\""), file=sys.stderr)
            return 1
        failed += outcome.status.startswith("still-")
        detail = "; ".join(f"{r['field']}: {r['message']}" for r in outcome.reasons)
        print(f"{dl_id}: {outcome.status}" + (f" ({detail})" if detail else ""))
    rt.drain_outbox(rt.topic_handlers(["pathway", "messaging"])) if args.process else None
    return 1 if failed else 0


def _dead_letter_json(row: dict) -> dict:
    """A dead letter for `dlq list --json`: the exact bytes as base64 (`rawBase64`) beside the readable text."""
    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "raw_bytes"}
    raw = row.get("raw_bytes")
    out["rawBase64"] = base64.b64encode(bytes(raw)).decode() if raw is not None else None
    return out


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    if settings.production:
        print("forlop token mints development tokens only; production tokens come from the identity provider",
              file=sys.stderr)
        return 2
    org = args.org or DEVELOPMENT_ORG_NUMBER
    registry = load_tenants(settings)
    tenant = registry.find(org)
    if tenant is None:
        known = ", ".join(f"{t.org_number} ({t.kind})" for t in registry.tenants.values())
        print(f"forlop token: organisation {org} is not in the tenant registry ({registry.source}); "
              f"known: {known}", file=sys.stderr)
        return 2
    scopes = args.scope or list(ALL_SCOPES)
    print(mint_dev_token(settings, scopes, ttl_s=args.ttl, org_parent=org,
                         hpr_number=args.hpr))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    rt = open_runtime(settings)  # migrated, and the Patient id key set
    if args.prune:
        print(f"audit records removed: {rt.audit_retention_step()}")
    if args.verify:
        with rt.store.read() as conn:
            checked = audit.verify(conn)
        if not checked.ok:
            print(f"audit chain BROKEN at record {checked.broken_at}: {checked.reason} "
                  f"({checked.records} records before it verified)")
            return 1
        print(f"audit chain intact: {checked.records} records verified")
    if args.patient:
        return print_accesses(rt, args.patient, args.date_from, args.date_to, args.json)
    if not (args.verify or args.prune):
        print("forlop audit: give --patient, --verify or --prune", file=sys.stderr)
        return 2
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rt = open_runtime(settings)
    clock = _as_of(args.as_of, settings) or rt.clock
    return print_timeline(rt, args.pathway, clock(), sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forlop", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (for Kubernetes)")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(func=cmd_serve)

    mig = sub.add_parser("migrate", help="apply database schema migrations")
    mig.set_defaults(func=cmd_migrate)

    rep = sub.add_parser("replay", help="feed an NDJSON file of vendor events through all services, no broker")
    rep.add_argument("--source", choices=("dips", "esp"), required=True)
    rep.add_argument("file")
    rep.add_argument("--as-of", help="derive status as of this time (ISO 8601)")
    rep.add_argument("--batch-size", type=int, default=1000)
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.add_argument("--cache-mb", type=int, default=256,
                     help="SQLite page cache per connection for this run, MiB (0: SQLite's default)")
    rep.add_argument("--workers", type=int, default=default_count(),
                     help="worker processes that check, derive and build messages ahead of the writes "
                          "(0: all in this process; default 1 with more than one core; each is ~180 MiB)")
    rep.set_defaults(func=cmd_replay)

    exp = sub.add_parser("export", help="export data")
    exp_sub = exp.add_subparsers(dest="what", required=True)
    fhir = exp_sub.add_parser("fhir", help="a FHIR Bundle (collection) of every resource")
    fhir.add_argument("--as-of", help="derive status at this time (default: now)")
    fhir.add_argument("--out", help="file to write (default stdout)")
    fhir.set_defaults(func=cmd_export)

    dead = sub.add_parser("dlq", help="inspect and replay dead letters: rejected and poison records of every stage")
    dlq_sub = dead.add_subparsers(dest="dlq_command", required=True)
    stages = ("ingest", "pathway", "messaging", "receipts", "relay")
    dl_list = dlq_sub.add_parser("list", help="the dead letters not replayed yet (open, still-rejected, still-failing)")
    dl_list.add_argument("--json", action="store_true", help="one JSON object a line, the exact bytes as rawBase64")
    dl_list.add_argument("--all", action="store_true", help="also replayed ones")
    dl_list.add_argument("--stage", choices=stages, help="only this stage's")
    dl_list.set_defaults(func=cmd_dlq)
    dl_rep = dlq_sub.add_parser(
        "replay", help="process dead letters again: ingest re-runs the ingest flow, pathway/messaging/receipts "
                       "that consumer's handler, relay queues the parked outbox record again")
    dl_rep.add_argument("id", nargs="?", type=int)
    dl_rep.add_argument("--all", action="store_true", help="every dead letter not replayed yet")
    dl_rep.add_argument("--stage", choices=stages, help="with --all: only this stage's")
    dl_rep.add_argument("--no-process", dest="process", action="store_false",
                        help="only re-ingest; leave the canonical events for the running services")
    dl_rep.set_defaults(func=cmd_dlq)

    tok = sub.add_parser("token", help="mint a development bearer token (embedded mode)")
    tok.add_argument("--scope", action="append", help="scope to grant (repeatable; default all)")
    tok.add_argument("--org", help="organisation number of a tenant in the registry (default: the demo "
                                   "registry's development tenant, which reads every pathway)")
    tok.add_argument("--hpr", help="HPR number of the person the token acts for (optional)")
    tok.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    tok.set_defaults(func=cmd_token)

    aud = sub.add_parser("audit", help="the audit trail: who accessed a patient's data; verify the hash chain")
    aud.add_argument("--patient", help="the patient's national id (fødselsnummer or D-nummer) or Patient id")
    aud.add_argument("--from", dest="date_from", help="from this date or instant (ISO 8601)")
    aud.add_argument("--to", dest="date_to", help="to this date or instant (ISO 8601; a date: its whole day)")
    aud.add_argument("--json", action="store_true", help="the records as FHIR AuditEvent, one JSON object a line")
    aud.add_argument("--verify", action="store_true", help="check the hash chain; exit 1 if it is broken")
    aud.add_argument("--prune", action="store_true", help="run the retention pass (FORLOP_AUDIT_RETENTION_DAYS) now")
    aud.set_defaults(func=cmd_audit)

    st = sub.add_parser("status", help="one pathway's timeline")
    st.add_argument("pathway", help="the source system's pathway id (or source:id)")
    st.add_argument("--as-of")
    st.set_defaults(func=cmd_status)

    messaging.add_commands(sub, lambda settings: open_runtime(settings).messaging_commands())
    pathway.add_commands(sub, lambda settings: open_runtime(settings).pathway_commands())
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"forlop: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, mask_key=settings.log_mask_key)
    try:
        return int(args.func(args, settings) or 0)
    except ConfigError as exc:
        print(f"forlop: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
