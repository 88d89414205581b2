"""`forlop`: the command line. Each command is a few lines that call into the services."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from forlop.config import ConfigError, Settings, load_settings
from forlop.logging import configure_logging


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings()


def _runtime(settings: Settings, *, migrate: bool = True, sqlite_cache_mb: int | None = None):  # noqa: ANN202
    from forlop.runtime import Runtime  # lazy import keeps `--help` fast

    rt = Runtime.from_settings(settings, sqlite_cache_mb=sqlite_cache_mb)
    if migrate:
        rt.store.migrate()
    return rt


def _as_of(value: str | None, settings: Settings):  # noqa: ANN202
    from forlop.clock import FixedClock, parse_time

    if value:
        return FixedClock(parse_time(value))
    return FixedClock(settings.clock) if settings.clock else None


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.embedded import run_embedded

    # The console shows the run's story; the services' JSON logs go to a file the summary points at.
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(log_dir / "forlop.log", "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
    configure_logging(settings.log_level, "json", stream=log_file, mask_key=settings.log_mask_key)
    try:
        return run_embedded(settings, pathways=args.pathways, seed=args.seed, keep_running=args.keep_running,
                            port=args.port)
    except KeyboardInterrupt:  # stopped early: everything was shut down on the way out
        print("forlop: stopped", file=sys.stderr)
        return 130


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.clock import parse_time
    from forlop.synthetic import iter_generate, write_ndjson

    as_of = parse_time(args.as_of) if args.as_of else settings.clock
    events = iter_generate(args.vendor, args.pathways, args.seed, as_of=as_of)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fp:
            write_ndjson(events, fp)
    else:
        try:
            write_ndjson(events, sys.stdout)
        except BrokenPipeError:  # `forlop generate ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.serve import serve_forever

    return serve_forever(_runtime(settings, migrate=False), args.service)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.storage import Store

    applied = Store(settings.database_url).migrate()
    print(f"schema migrations applied: {applied or 'none (up to date)'}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.replay import replay_file

    rt = _runtime(settings, sqlite_cache_mb=args.cache_mb or None)
    clock = _as_of(args.as_of, settings)
    if clock:
        rt.clock = clock
    counts = replay_file(rt, args.source, Path(args.file), batch_size=args.batch_size,
                         progress=None if args.quiet else sys.stderr, workers=args.workers)
    print(counts.line())
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.export import export_bundle

    rt = _runtime(settings)
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
    from forlop import dead_letters
    from forlop.dlq import replay

    rt = _runtime(settings)
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
            outcome = replay(rt, dl_id)
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
    import base64

    out = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items() if k != "raw_bytes"}
    raw = row.get("raw_bytes")
    out["rawBase64"] = base64.b64encode(bytes(raw)).decode() if raw is not None else None
    return out


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.auth import ALL_SCOPES, mint_dev_token

    if settings.production:
        print("forlop token mints development tokens only; production tokens come from the identity provider",
              file=sys.stderr)
        return 2
    scopes = args.scope or list(ALL_SCOPES)
    print(mint_dev_token(settings, scopes, ttl_s=args.ttl))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from forlop.timeline import print_timeline

    rt = _runtime(settings)
    clock = _as_of(args.as_of, settings) or rt.clock
    return print_timeline(rt, args.pathway, clock(), sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forlop", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run everything embedded: bundled broker, SQLite, all services, a synthetic day")
    run.add_argument("--pathways", type=int, default=24, help="pathways per vendor (default 24)")
    run.add_argument("--seed", type=int, default=2026)
    run.add_argument("--port", type=int, default=None, help="API port (default FORLOP_HTTP_PORT or a free one)")
    run.add_argument("--keep-running", action="store_true", help="keep the services and API up until Ctrl-C")
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate", help="write synthetic vendor events (NDJSON)")
    gen.add_argument("--vendor", choices=("dips", "esp"), required=True)
    gen.add_argument("--pathways", type=int, default=10)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--as-of", help="no event after this time (default: now)")
    gen.add_argument("--out", help="file to write (default stdout)")
    gen.set_defaults(func=cmd_generate)

    serve = sub.add_parser("serve", help="run one service (for Kubernetes)")
    serve.add_argument("service", choices=("ingest", "pathway", "messaging", "api"))
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
    from forlop.replay_workers import default_count

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

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters: rejected and poison records of every stage")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
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
    tok.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    tok.set_defaults(func=cmd_token)

    st = sub.add_parser("status", help="one pathway's timeline")
    st.add_argument("pathway", help="the source system's pathway id (or source:id)")
    st.add_argument("--as-of")
    st.set_defaults(func=cmd_status)

    from forlop import bench
    from services.messaging import cli as messaging_cli
    from services.pathway import cli as pathway_cli

    for module in (messaging_cli, pathway_cli, bench):
        module.add_commands(sub)
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
