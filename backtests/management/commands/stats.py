"""`manage.py stats [--period day|week|month] [--since] [--until] [--format text|json]` (DESIGN §7): statistics of
what the daemon did, from the history tables only; works with the daemon offline.

--since/--until take a date (a whole US/Eastern trading date, both inclusive) or an ISO 8601 instant with an
offset (until exclusive). Besides hedges, fills, P&L, slippage, vol and blocks: order -> fill latency (p50/p95 ms to
the first and to the last fill), win rate per hedge round trip and risk halts with their messages (the keys are those
of `backtests.stats.stats_report`). Exit codes: 0 printed, 1 refused input (a bad date names the option), 2 usage
error."""
from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backtests.stats import PERIODS, render_text, stats_report
from trading.errors import ConfigError


def parse_when(option: str, text: str | None) -> date | datetime | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(option, f"expected a date YYYY-MM-DD or an ISO 8601 instant, got {text!r}") from None
    if ts.tzinfo is None:
        raise ConfigError(option, f"an instant needs a UTC offset (e.g. {text}+00:00), got {text!r}")
    return ts


class Command(BaseCommand):
    help = ("Statistics of hedges, fills, P&L, slippage, vol, order-to-fill latency, hedge round trips, risk halts "
            "and blocks from the history tables.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", choices=PERIODS, default="day")
        parser.add_argument("--since", default=None, metavar="DATE_OR_ISO")
        parser.add_argument("--until", default=None, metavar="DATE_OR_ISO")
        parser.add_argument("--format", choices=("text", "json"), default="text")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = parse_when("--since", options["since"])
            until = parse_when("--until", options["until"])
            report = stats_report(period=options["period"], since=since, until=until)
        except ConfigError as exc:
            self.stderr.write(f"stats: refused: {exc.field}: {exc.reason}")
            sys.exit(1)
        if options["format"] == "json":
            self.stdout.write(json.dumps(report, indent=1))
        else:
            self.stdout.write(render_text(report))
