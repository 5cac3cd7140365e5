"""`manage.py control COMMAND [--reason TEXT] [--wait SECONDS]`: queue the same command the web does."""
from __future__ import annotations

import getpass
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from trading.errors import ControlCommandError
from trading.models import ControlCommand
from trading.services import control_command_create

FINAL = {ControlCommand.State.DONE: 0, ControlCommand.State.REJECTED: 1, ControlCommand.State.EXPIRED: 1}
EXIT_TIMEOUT = 2


class Command(BaseCommand):
    help = "Send a control command to the daemon (start is carried out through supervisord)."

    def add_arguments(self, parser: CommandParser) -> None:
        # No `choices` here: an unknown command must get the same refusal as from the web.
        parser.add_argument("command", help="|".join(ControlCommand.Command.values))
        parser.add_argument("--reason", default="")
        parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                            help="wait until the command is done (exit 0), rejected/expired (1) or timed out (2)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cmd = control_command_create(command=options["command"], reason=options["reason"],
                                         user=f"cli:{getpass.getuser()}", source="cli")
        except ControlCommandError as exc:
            self.stderr.write(f"control: {exc}")
            sys.exit(1)
        self.stdout.write(f"#{cmd.pk} {cmd.command}: {cmd.state}")
        if options["wait"] is None:
            return
        deadline = time.monotonic() + options["wait"]
        while cmd.state not in FINAL and time.monotonic() < deadline:
            time.sleep(0.05)
            cmd.refresh_from_db()
        self.stdout.write(f"#{cmd.pk} {cmd.command}: {cmd.state}" + (f" - {cmd.result}" if cmd.result else ""))
        sys.exit(FINAL.get(cmd.state, EXIT_TIMEOUT))
