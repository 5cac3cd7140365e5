"""`manage.py tws_sim`: the TWS-protocol simulator on 127.0.0.1, or (`--send`) a fault command to a running one."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from trading.sim.market import MarketConfig
from trading.sim.tws_server import ACCOUNT, COMMANDS, ControlServer, TwsServer, send_command

log = logging.getLogger("trading.sim")

# Scenarios: named market configs. "default" is the demo market (realised vol above the options' implied vol,
# as SimBroker's demo), "calm" has realised = implied, "jumpy" adds jumps.
SCENARIOS: dict[str, MarketConfig] = {
    "default": MarketConfig(realized_vol=0.80),
    "calm": MarketConfig(realized_vol=0.35),
    "jumpy": MarketConfig(realized_vol=0.80, jump_intensity_per_day=200.0, jump_std_frac=0.004),
}


class Command(BaseCommand):
    help = ("Run the TWS-protocol simulator (IB socket protocol, server version 176) backed by the simulated "
            "market, with seeded paper accounts. Fault and foreign-activity commands: "
            + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=7497, help="API port (7497 = TWS paper)")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default")
        parser.add_argument("--speed", type=float, default=1.0,
                            help="the price process runs this many times faster than the wall clock")
        parser.add_argument("--tick-s", type=float, default=0.25, help="seconds between market data updates")
        parser.add_argument("--fill-latency-ms", type=int, default=None)
        parser.add_argument("--accounts", type=_accounts, default=[ACCOUNT], metavar="A,B",
                            help=f"the login's managed accounts, comma-separated (default {ACCOUNT}); the first holds "
                                 "the seeded straddle and manual positions, the others cash and some shares")
        parser.add_argument("--state", type=Path, default=None,
                            help="JSON file (and <file>.journal beside it) keeping the accounts, orders and executions "
                                 "across restarts")
        parser.add_argument("--control-port", type=int, default=None,
                            help="also listen on this port for fault commands (one per line, JSON reply)")
        parser.add_argument("--fault", action="append", default=[], metavar="COMMAND",
                            help="apply this fault command at start (repeatable), e.g. --fault 'silent on'")
        parser.add_argument("--send", metavar="COMMAND",
                            help="send COMMAND to the simulator's --control-port and print the JSON reply")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["send"]:
            if options["control_port"] is None:
                self.stderr.write("tws_sim: --send needs --control-port")
                sys.exit(2)
            reply = send_command(options["control_port"], options["send"])
            self.stdout.write(json.dumps(reply, indent=2))
            sys.exit(0 if reply.get("ok") else 1)
        config = SCENARIOS[options["scenario"]]
        if options["fill_latency_ms"] is not None:
            config = MarketConfig(**{**config.__dict__, "fill_latency_ms": options["fill_latency_ms"]})
        asyncio.run(self._serve(config, options))

    async def _serve(self, config: MarketConfig, options: dict[str, Any]) -> None:
        server = TwsServer(config, seed=options["seed"], port=options["port"], speed=options["speed"],
                           tick_s=options["tick_s"], state_path=options["state"], accounts=options["accounts"])
        for fault in options["fault"]:
            reply = await server.command(fault)
            if not reply.get("ok"):
                self.stderr.write(f"tws_sim: {reply.get('error')}")
                sys.exit(2)
        await server.start()
        control = None
        if options["control_port"] is not None:
            control = ControlServer(server, options["control_port"])
            await control.start()
        self.stdout.write(f"tws_sim: serving the IB API on 127.0.0.1:{server.port} (scenario {options['scenario']}, "
                          f"seed {options['seed']}, accounts {','.join(server.accounts)})"
                          + (f", control port {control.port}" if control else ""))
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if control is not None:
            await control.stop()
        await server.stop()


def _accounts(text: str) -> list[str]:
    """`A,B` -> ["A", "B"]: distinct, non-empty account ids."""
    accounts = [a.strip() for a in text.split(",")]
    if not all(accounts) or len(set(accounts)) != len(accounts):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated account ids, got {text!r}")
    return accounts
