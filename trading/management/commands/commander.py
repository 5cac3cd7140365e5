"""`manage.py commander run [--dry-run] [--strategy SLUG]… [--wait SECONDS]` (Contract, DESIGN §11): queue a
commander run for the daemon and print its summary.

Exit codes: 0 completed or dry-run; 1 failed or partial success, or an unknown strategy (named, nothing runs);
2 timed out, or the daemon is not running."""
from __future__ import annotations

import getpass
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from trading.commander import commander_request
from trading.errors import ConfigError, ControlCommandError
from trading.models import CommanderRun

EXIT = {CommanderRun.State.COMPLETED: 0, CommanderRun.State.FAILED: 1, CommanderRun.State.PARTIAL_SUCCESS: 1}
EXIT_TIMEOUT = 2


class Command(BaseCommand):
    help = "Run the commander: strategies -> reconcile -> decision (and orders, where sending is enabled)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        run = sub.add_parser("run", help="queue a run for the daemon and wait for its summary")
        run.add_argument("--dry-run", action="store_true", help="decide and record, send nothing")
        run.add_argument("--strategy", action="append", default=[], metavar="SLUG",
                         help="only this strategy (repeatable; default every enabled one)")
        run.add_argument("--wait", type=float, default=300.0, metavar="SECONDS")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run = commander_request(dry_run=options["dry_run"], strategies=options["strategy"],
                                    user=f"cli:{getpass.getuser()}", source="cli")
        except (ConfigError, ControlCommandError) as exc:
            self.stderr.write(f"commander: refused: {exc}")
            sys.exit(1)
        if run.state == CommanderRun.State.FAILED and run.steps and run.steps[-1]["step"] == "queue":
            self.stderr.write(f"commander: run #{run.pk} not run: the daemon is not running ({run.steps[-1]['outcome']})")
            sys.exit(EXIT_TIMEOUT)
        self.stdout.write(f"commander run #{run.pk}: {run.state}")
        deadline = time.monotonic() + options["wait"]
        while run.state not in EXIT and time.monotonic() < deadline:
            time.sleep(0.1)
            run.refresh_from_db()
        if run.state not in EXIT:
            self.stderr.write(f"commander: run #{run.pk} still {run.state} after {options['wait']:g} s")
            sys.exit(EXIT_TIMEOUT)
        self.stdout.write(f"commander run #{run.pk}: {run.state} - {run.summary}")
        for order in run.orders:
            contract = order["contract"]
            self.stdout.write(f"  {order['order_ref']}  {order['action']} {order['qty']} "
                              f"{contract.get('local_symbol') or contract['symbol']} @ {order['limit_price_usd']} "
                              f"({order['outcome']})")
        for kind, reasons in run.decision.get("skipped", {}).items():
            for slug, reason in reasons.items():
                self.stdout.write(f"  skipped {slug} ({kind}): {reason}")
        sys.exit(EXIT[run.state])
