"""`manage.py backtest`, `import_ticks` and `stats` as the Contract says: files, exit codes, refusals that name the
field or the line, and no database writes without --save."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from backtests import data as tickdata
from backtests.data import write_ticks_csv
from backtests.models import BacktestRun, MarketDataset
from tests.backtests.conftest import REPO, market
from trading.models import Decision, Fill, Operation, Order


@pytest.fixture(scope="module")
def ticks_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ticks") / "ticks.csv"
    write_ticks_csv(market(realized_vol=0.8).slice(0, 4000), path)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **(env or {})}, timeout=120)


def call(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def counts() -> list[int]:
    return [m.objects.count() for m in (BacktestRun, MarketDataset, Order, Fill, Decision, Operation)]


def test_backtest_as_a_process_writes_result_and_decisions_and_exits_0(ticks_csv, tmp_path):
    out, decisions = tmp_path / "result.json", tmp_path / "decisions.csv"

    done = run("backtest", "--data", str(ticks_csv), "--params", '{"cooldown_s": 10}', "--start-position",
               "straddle:5", "--out", str(out), "--decisions", str(decisions))

    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["ticks"] == 4000 and result["params"]["cooldown_s"] == 10
    assert result["start_position"]["straddles"] == 5
    rows = list(csv.DictReader(decisions.open()))
    assert len(rows) == 4000 and {r["decision"] for r in rows} >= {"hedge", "none"}
    assert "P&L" in done.stdout and "hedges" in done.stdout


def test_backtest_usage_errors_exit_2():
    done = run("backtest", "--params", "{}")

    assert done.returncode == 2
    assert "--data" in done.stderr


@pytest.mark.django_db
def test_backtest_refuses_bad_params_naming_the_field(ticks_csv):
    code, _, err = call("backtest", "--data", str(ticks_csv), "--params", '{"max_daily_hedges": -3}')

    assert code == 1
    assert "params.max_daily_hedges" in err

    code, _, err = call("backtest", "--data", str(ticks_csv), "--params", '{"cooldown": 3}')
    assert code == 1 and "params.cooldown: unknown parameter" in err


@pytest.mark.django_db
def test_backtest_refuses_a_bad_csv_with_its_line_number(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ts,bid,ask\n1773153000,10,10.1\n1773153001,10.2,10.1\n")

    code, _, err = call("backtest", "--data", str(bad))

    assert code == 1
    assert "line 3" in err and "crossed quote" in err


@pytest.mark.django_db
def test_backtest_writes_nothing_to_the_database_without_save(ticks_csv, tmp_path):
    before = counts()

    code, _, _ = call("backtest", "--data", str(ticks_csv), "--out", str(tmp_path / "r.json"))

    assert code == 0
    assert counts() == before


@pytest.mark.django_db
def test_backtest_save_keeps_the_run_and_its_data(ticks_csv, tmp_path):
    code, out, _ = call("backtest", "--data", str(ticks_csv), "--save")

    assert code == 0 and "saved as backtest #" in out
    run_row = BacktestRun.objects.get()
    assert run_row.state == "done" and run_row.progress == 100 and run_row.result["ticks"] == 4000
    assert run_row.dataset.ticks == 4000


@pytest.mark.django_db
def test_backtest_runs_a_synthetic_market(tmp_path):
    out = tmp_path / "r.json"

    code, stdout, err = call("backtest", "--synthetic", '{"days": 1, "tick_s": 5, "seed": 3}', "--out", str(out))

    assert code == 0, err
    assert json.loads(out.read_text())["ticks"] == 4680
    code, _, err = call("backtest", "--synthetic", '{"dayz": 1}')
    assert code == 1 and "synthetic.dayz" in err


@pytest.mark.django_db
def test_import_ticks_stores_a_dataset_or_refuses_with_the_line(ticks_csv, tmp_path):
    code, out, _ = call("import_ticks", str(ticks_csv), "--name", "nvda day")

    assert code == 0 and "4000 ticks" in out
    assert MarketDataset.objects.get().name == "nvda day"

    bad = tmp_path / "bad.csv"
    bad.write_text("ts,bid,ask\n1773153001,1,2\n1773153000,1,2\n")
    code, _, err = call("import_ticks", str(bad))
    assert code == 1 and "line 3" in err and "nothing imported" in err
    assert MarketDataset.objects.count() == 1


@pytest.mark.django_db
def test_a_parquet_file_backtests_and_imports_like_its_csv(ticks_csv, tmp_path):
    parquet = tmp_path / "ticks.parquet"
    tickdata.write_ticks_parquet(tickdata.read_ticks_csv(ticks_csv), parquet)
    results = []
    for source in (ticks_csv, parquet):
        out = tmp_path / f"{source.suffix}.json"
        code, _, err = call("backtest", "--data", str(source), "--start-position", "straddle:5", "--out", str(out))
        assert code == 0, err
        results.append(json.loads(out.read_text()))
    for result in results:
        del result["timing"]
    assert results[0] == results[1] and results[0]["ticks"] == 4000

    code, out, _ = call("import_ticks", str(parquet), "--name", "as parquet")
    assert code == 0 and "4000 ticks" in out
    assert MarketDataset.objects.get().name == "as parquet"
