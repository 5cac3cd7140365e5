"""`manage.py import_ticks FILE.csv|FILE.parquet [--name N]`: validate a tick file in full and store it as a
MarketDataset.

A bad row is refused with its line number and nothing is stored (exit 1)."""
from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from backtests import data as tickdata
from backtests.management.commands.backtest import progress_bar
from backtests.services import dataset_import_csv
from trading.errors import ConfigError, DataFileError


class Command(BaseCommand):
    help = "Import a tick CSV or Parquet file (ts,bid,ask[,last][,iv]) as a backtest dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE.csv|FILE.parquet")
        parser.add_argument("--name", default=None, help="dataset name (default: the file name)")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            with progress_bar(tickdata.count_rows(path), f"importing {path.name}", "rows") as bar:
                dataset = dataset_import_csv(name=options["name"] or path.name, file=path,
                                             user=f"cli:{getpass.getuser()}", progress=bar.update)
        except DataFileError as exc:
            self.stderr.write(f"import_ticks: refused: {path}: {exc} (nothing imported)")
            sys.exit(1)
        except (ConfigError, OSError) as exc:
            self.stderr.write(f"import_ticks: refused: {exc} (nothing imported)")
            sys.exit(1)
        self.stdout.write(f"dataset #{dataset.pk} {dataset.name!r}: {dataset.ticks} ticks "
                          f"{dataset.first_ts.isoformat()} .. {dataset.last_ts.isoformat()}"
                          + (" with IV" if dataset.has_iv else ""))
