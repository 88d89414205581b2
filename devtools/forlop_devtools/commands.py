"""The development package's commands of `forlop`: `run` (the embedded demo), `generate`, `bench`.

Registered through the entry-point group `forlop.commands` (devtools/pyproject.toml); the
application's command line (`app.cli`) loads every command of that group, and never imports
this package itself. Each handler takes ``(args, settings)`` and returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from forlop.clock import parse_time
from forlop.config import Settings
from forlop.logging import configure_logging
from forlop_devtools import bench
from forlop_devtools.run import run_embedded
from forlop_devtools.synthetic import iter_generate, write_ndjson


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
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


def add_commands(sub: Any) -> None:
    """The `forlop.commands` entry point: add this package's commands to `forlop`'s subparsers."""
    run = sub.add_parser("run", help="run everything embedded: bundled broker, SQLite, all services, a synthetic day "
                                     "(development package)")
    run.add_argument("--pathways", type=int, default=24, help="pathways per vendor (default 24)")
    run.add_argument("--seed", type=int, default=2026)
    run.add_argument("--port", type=int, default=None, help="API port (default FORLOP_HTTP_PORT or a free one)")
    run.add_argument("--keep-running", action="store_true", help="keep the services and API up until Ctrl-C")
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate", help="write synthetic vendor events (NDJSON; development package)")
    gen.add_argument("--vendor", choices=("dips", "esp"), required=True)
    gen.add_argument("--pathways", type=int, default=10)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--as-of", help="no event after this time (default: now)")
    gen.add_argument("--out", help="file to write (default stdout)")
    gen.set_defaults(func=cmd_generate)

    bench.add_commands(sub)
