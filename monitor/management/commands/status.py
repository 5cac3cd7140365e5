"""`manage.py status [--json]`: the /api/status/ payload, lamp judged the same way (daemon offline included)."""
from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitor.selectors import status_payload_get


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


class Command(BaseCommand):
    help = "Print the daemon's status (lamp, verdict, reasons, key figures)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the /api/status/ JSON payload")

    def handle(self, *args: Any, **options: Any) -> None:
        s = status_payload_get()
        if options["json"]:
            self.stdout.write(json.dumps(s, indent=2, default=str))
            return
        d, t, m, b, p = s["daemon"], s["trading"], s["market"], s["book"], s["pnl"]
        lines = [
            f"lamp      {s['lamp'].upper()} ({s['verdict']})",
            f"reasons   {', '.join(s['block_reasons']) or 'none'}",
            f"daemon    {d['state']} mode={d['mode']} pid={_fmt(d['pid'])} heartbeat {_fmt(d['heartbeat_age_s'], '.1f')} s ago",
            f"trading   {t['state']}{' PAUSED' if t['paused'] else ''}{' HALTED' if t['halted'] else ''}",
            f"market    {_fmt(m['symbol'])} bid {_fmt(m['bid'])} ask {_fmt(m['ask'])} lag {_fmt(m['data_lag_ms'])} ms",
            f"book      net delta {_fmt(b['net_delta_shares'], '+.1f')} sh, hedge {_fmt(b['hedge_shares'], '+g')} sh",
            f"pnl       daily {_fmt(p['daily_usd'], '+.2f')} USD, hedges today {s['counters']['daily_hedges']}",
        ]
        lines += [f"  {c['status']:>8}  {c['name']}: {c['reason'] or 'ok'} {c['detail']}" for c in s["checks"]]
        self.stdout.write("\n".join(lines))
