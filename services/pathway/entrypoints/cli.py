"""`forlop indicators` and `forlop quality`: the reports of the API, as a table or JSON.

Added to the `forlop` command by the application (``add_commands(sub, context)``): each command
asks `context` for what it works with (`CliContext`, built from the settings by the
application's composition root) and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from typing import Any, TextIO

from forlop.clock import Clock, parse_time
from forlop.config import Settings
from forlop.storage import Store
from services.pathway.adapters.reports import compute_indicators, compute_quality


@dataclass(frozen=True)
class CliContext:
    """What the report commands read: the store (migrated) and the clock."""

    store: Store
    clock: Clock


ContextFactory = Callable[[Settings], CliContext]


def add_commands(sub: Any, context: ContextFactory) -> None:
    ind = sub.add_parser("indicators", help="deadlines met per milestone, with the national targets beside them")
    _period_args(ind)
    ind.add_argument("--group-by", choices=("pathwayType", "unit", "month"), default="pathwayType")
    ind.add_argument("--json", action="store_true", help="print the report as JSON")
    ind.set_defaults(func=partial(cmd_indicators, context=context))

    q = sub.add_parser("quality", help="registration-quality findings (incl. inpatient stays' notices) and missing "
                                       "milestones per unit and month")
    _period_args(q)
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.set_defaults(func=partial(cmd_quality, context=context))


def _period_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="date_from", type=_iso_date, help="first day (YYYY-MM-DD), inclusive")
    p.add_argument("--to", dest="date_to", type=_iso_date, help="last day (YYYY-MM-DD), inclusive")
    p.add_argument("--as-of", help="the day open deadlines are measured against (ISO 8601; default: now or FORLOP_CLOCK); "
                   "statuses are as last derived")


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _now(args: argparse.Namespace, ctx: CliContext) -> datetime:
    return parse_time(args.as_of) if args.as_of else ctx.clock()


def _check_period(args: argparse.Namespace) -> bool:
    if args.date_from and args.date_to and args.date_from > args.date_to:
        print(f"forlop: --from {args.date_from} is after --to {args.date_to}", file=sys.stderr)
        return False
    return True


def cmd_indicators(args: argparse.Namespace, settings: Settings, context: ContextFactory) -> int:
    if not _check_period(args):
        return 2
    ctx = context(settings)
    report = compute_indicators(ctx.store, _now(args, ctx), args.date_from, args.date_to, args.group_by)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_indicators(report.to_dict(), sys.stdout)
    return 0


def cmd_quality(args: argparse.Namespace, settings: Settings, context: ContextFactory) -> int:
    if not _check_period(args):
        return 2
    ctx = context(settings)
    report = compute_quality(ctx.store, _now(args, ctx), args.date_from, args.date_to)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_quality(report, sys.stdout)
    return 0


def print_indicators(report: dict[str, Any], out: TextIO) -> None:
    out.write(
        f"indicators {_period(report)} by {report['groupBy']}, "
        f"open deadlines as of {report['asOf']} ({report['pathways']} pathways)\n"
    )
    out.write(f"{'group':<12} {'milestone':<18} {'done':>6} {'met':>6} {'met-adj':>7} {'late':>6} "
              f"{'on time':>8} {'adjusted':>8} {'median d':>8} {'overdue':>7}\n")
    for r in report["indicators"]:
        out.write(
            f"{r['group']:<12} {r['milestone']:<18} {r['done']:>6} {r['met']:>6} {r['metAdjusted']:>7} "
            f"{r['late']:>6} {_pct(r['onTimeNational']):>8} {_pct(r['onTimeAdjusted']):>8} "
            f"{_num(r['medianDays']):>8} {r['openOverdue']:>7}\n"
        )
    if report["targets"]:
        out.write("\nnational targets\n")
        out.write(f"{'group':<12} {'type':<10} {'target':<22} {'value':>8} {'goal':>10} {'n':>6}  met\n")
        for t in report["targets"]:
            pct = t["target"] == "evaluation-share"
            value = _pct(t["value"]) if pct else _num(t["value"])
            goal = ("≥ " + _pct(t["threshold"])) if pct else f"< {t['threshold']} d"
            out.write(
                f"{t['group']:<12} {t['pathwayType'] + ' ' + (t['short'] or ''):<10} {t['target']:<22} "
                f"{value:>8} {goal:>10} {t['count']:>6}  {'yes' if t['met'] else 'NO'}\n"
            )


def print_quality(report: dict[str, Any], out: TextIO) -> None:
    out.write(
        f"registration quality {_period(report)} "
        f"({report['pathways']} pathways)\n"
    )
    out.write(f"{'kind':<36} {'category':<18} {'count':>6}  examples\n")
    for k in report["kinds"]:
        examples = ", ".join(e["pathwayKey"] for e in k["examples"])
        out.write(f"{k['kind']:<36} {k['category']:<18} {k['count']:>6}  {examples}\n")
    out.write(f"\n{'unit':<14} {'month':<8} {'kind':<36} {'count':>6}\n")
    for r in report["byUnitMonth"]:
        out.write(f"{r['unit']:<14} {r['month'] or '-':<8} {r['kind']:<36} {r['count']:>6}\n")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _num(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"


def _period(report: dict) -> str:
    if not report["from"] and not report["to"]:
        return "(all time)"
    return f"{report['from'] or 'start'} .. {report['to'] or 'now'}"
