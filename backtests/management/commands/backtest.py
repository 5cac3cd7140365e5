"""`manage.py backtest --data FILE.csv|FILE.parquet [--params JSON_OR_FILE] [--start-position straddle:N] [--out result.json]
[--decisions decisions.csv] [--save]` (DESIGN §7): a synchronous replay, no broker, no database writes unless --save.

Exit codes: 0 done; 1 refused input (bad params name the field, a bad CSV names the line, a bad synthetic spec
names the setting, an unreadable file); 2 command-line usage error (argparse)."""
from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from backtests import data as tickdata
from backtests.replay import HALT_POLICIES, parse_start_position, run_backtest, write_decisions_csv
from trading.core.params import StrategyParams
from trading.errors import ConfigError, DataFileError

EXIT_REFUSED = 1


def load_json_arg(option: str, text: str) -> Any:
    """A JSON literal (starting with '{' or '[') or the path of a JSON file."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ConfigError(option, f"not valid JSON: {exc}") from None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(option, f"neither JSON nor a readable file: {text!r}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(option, f"{path}: not a JSON file ({exc})") from None


def progress_bar(total: int, desc: str, unit: str) -> tqdm:  # type: ignore[type-arg]
    """A tqdm bar on stderr when it is a terminal; silent otherwise (logs and pipes stay clean)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


class Command(BaseCommand):
    help = "Replay ticks through the trading engine with simulated fills and report the result (DESIGN §7)."
    requires_system_checks: list[str] = []  # a replay serves no page: skip importing the URL map and the admin

    def add_arguments(self, parser: CommandParser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--data", metavar="FILE", help="tick CSV or Parquet: ts,bid,ask[,last][,iv]")
        source.add_argument("--synthetic", metavar="JSON_OR_FILE",
                            help='seeded synthetic market, e.g. \'{"seed": 7, "days": 5, "realized_vol": 0.8}\'')
        source.add_argument("--dataset", metavar="ID", type=int, help="a stored MarketDataset (read only)")
        parser.add_argument("--params", metavar="JSON_OR_FILE", default=None,
                            help="strategy params (missing keys take defaults)")
        parser.add_argument("--start-position", default="straddle:10", metavar="straddle:N")
        parser.add_argument("--out", metavar="result.json", help="write result.json here")
        parser.add_argument("--decisions", metavar="decisions.csv", help="one row per tick with every reason")
        parser.add_argument("--halt-policy", choices=HALT_POLICIES, default=HALT_POLICIES[0],
                            help="after a daily-loss halt: resume at the next trading day's first tick (as an operator "
                                 "would reset it the next morning) or stop hedging for the rest of the run")
        parser.add_argument("--save", action="store_true", help="keep the run (and an imported --data file) in the DB")
        parser.add_argument("--path", choices=("auto", "fast", "per_event"), default="auto",
                            help="auto: the compiled fast path when it supports the params, else per event")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._run(options)
        except ConfigError as exc:
            field = exc.field if exc.field.startswith(("--", "synthetic", "start_position", "path")) \
                else f"params.{exc.field}"
            self.stderr.write(f"backtest: refused: {field}: {exc.reason}")
            sys.exit(EXIT_REFUSED)
        except DataFileError as exc:
            self.stderr.write(f"backtest: refused: {options.get('data')}: {exc}")
            sys.exit(EXIT_REFUSED)
        except OSError as exc:
            self.stderr.write(f"backtest: refused: {exc}")
            sys.exit(EXIT_REFUSED)

    def _run(self, options: dict[str, Any]) -> None:
        raw_params = load_json_arg("--params", options["params"]) if options["params"] else {}
        params = StrategyParams.from_dict(raw_params)
        straddles = parse_start_position(options["start_position"])
        synthetic = None
        dataset = None
        if options["data"]:
            path = Path(options["data"])
            with progress_bar(tickdata.count_rows(path), f"reading {path.name}", "rows") as bar:
                ticks = tickdata.read_ticks(path, progress=bar.update)
        elif options["synthetic"] is not None:
            spec = tickdata.SyntheticSpec.from_dict(load_json_arg("--synthetic", options["synthetic"]))
            synthetic = spec.to_dict()
            ticks = tickdata.generate(spec)
        else:
            from backtests.models import MarketDataset
            from backtests.services import dataset_ticks

            dataset = MarketDataset.objects.filter(pk=options["dataset"]).first()
            if dataset is None:
                raise ConfigError("--dataset", f"no dataset #{options['dataset']}")
            ticks = dataset_ticks(dataset)
        with progress_bar(100, "replaying", "%") as bar:
            done = [0]

            def progress(fraction: float) -> None:
                pct = int(fraction * 100)
                if pct > done[0]:
                    bar.update(pct - done[0])
                    done[0] = pct

            outcome = run_backtest(ticks, params, straddles=straddles, path=options["path"],
                                   halt_policy=options["halt_policy"], progress=progress,
                                   keep_trace=bool(options["decisions"]))
        result = outcome.result
        if options["out"]:
            Path(options["out"]).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        if options["decisions"]:
            assert outcome.trace is not None
            write_decisions_csv(ticks, outcome.trace, options["decisions"])
        self._report(result, options)
        if options["save"]:
            self._save(result, params, options, ticks, synthetic, dataset)

    def _report(self, r: dict[str, Any], options: dict[str, Any]) -> None:
        timing = r["timing"]
        w = self.stdout.write
        w(f"backtest: {r['ticks']} ticks {r['first_ts']} .. {r['last_ts']}, {r['path']} path, "
          f"{timing['elapsed_s']:.2f} s ({timing['ticks_per_s'] or 0:,.0f} ticks/s), params {r['params_hash'][:12]}")
        w(f"P&L {r['pnl_total_usd']:,.2f} USD = options {r['pnl_options_usd']:,.2f} + hedge {r['pnl_hedge_usd']:,.2f} "
          f"- commissions {r['commissions_usd']:,.2f}")
        sharpe = "-" if r["sharpe"] is None else f"{r['sharpe']:.2f}"
        w(f"hedges {r['hedges']} ({r['hedged_shares']:,.0f} shares), max drawdown {r['max_drawdown_usd']:,.2f} USD, "
          f"sharpe {sharpe}" + (", HALTED by the daily loss breaker" if r["halted"] else ""))
        blocks = ", ".join(f"{k} {v}" for k, v in r["blocks"].items()) or "none"
        w(f"blocked ticks by reason: {blocks}")
        if r.get("path_note"):
            w(r["path_note"])
        for option, what in (("out", "result"), ("decisions", "decisions")):
            if options[option]:
                w(f"{what} written to {options[option]}")

    def _save(self, result: dict[str, Any], params: StrategyParams, options: dict[str, Any],
              ticks: tickdata.TickData, synthetic: dict[str, Any] | None, dataset: Any) -> None:
        from backtests.services import backtest_run_save, dataset_create

        user = f"cli:{getpass.getuser()}"
        if options["data"]:
            path = Path(options["data"])
            dataset = dataset_create(name=path.name, ticks=ticks, source="import", user=user,
                                     meta={"original_name": path.name})
        run = backtest_run_save(result=result, params=params, start_position=options["start_position"], user=user,
                                dataset=dataset, synthetic=synthetic)
        self.stdout.write(f"saved as backtest #{run.pk}" + (f" (dataset #{dataset.pk})" if dataset else ""))
