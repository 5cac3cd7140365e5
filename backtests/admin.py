"""Backtests in the admin control room: datasets (import a CSV), runs and sweeps (queued through the same services
as the API, then read-only evidence), cancel actions, and the daily statistics rollup."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from backtests import services
from backtests.errors import BacktestStateError
from backtests.forms import BacktestRunForm, DatasetImportForm, SweepForm
from backtests.models import ACTIVE_STATES, BacktestRun, DailyStats, MarketDataset, Sweep
from trading.errors import ConfigError, DataFileError


class _QueuedAdmin(admin.ModelAdmin):
    """Queued through a service on add; afterwards the record is evidence (read only)."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fields if obj is None else super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields


@admin.register(BacktestRun)
class BacktestRunAdmin(_QueuedAdmin):
    add_form = BacktestRunForm
    add_fields = ("dataset", "synthetic_text", "params_text", "start_position", "path_choice")
    list_display = ("id", "state", "progress_pct", "data_source", "params_short", "pnl", "hedges", "path",
                    "elapsed_s", "created_by", "created_at", "sweep")
    list_filter = ("state", "path", ("created_at", admin.DateFieldListFilter))
    search_fields = ("params_hash", "created_by", "error")
    readonly_fields = ("dataset", "synthetic", "params", "params_hash", "start_position", "state", "progress",
                       "error", "summary", "task_id", "path", "created_by", "created_at", "started_at", "finished_at",
                       "elapsed_s", "sweep")
    exclude = ("result",)
    actions = ["cancel", "requeue"]

    @admin.display(description="progress")
    def progress_pct(self, obj: BacktestRun) -> str:
        return f"{obj.progress} %"

    @admin.display(description="data")
    def data_source(self, obj: BacktestRun) -> str:
        if obj.dataset_id:
            return str(obj.dataset)
        return "synthetic" if obj.synthetic else "(deleted)"

    @admin.display(description="params")
    def params_short(self, obj: BacktestRun) -> str:
        return obj.params_hash[:10]

    @admin.display(description="P&L USD")
    def pnl(self, obj: BacktestRun) -> str:
        return f"{obj.result['pnl_total_usd']:,.2f}" if obj.result else "-"

    @admin.display(description="hedges")
    def hedges(self, obj: BacktestRun) -> str:
        return str(obj.result["hedges"]) if obj.result else "-"

    @admin.display(description="result")
    def summary(self, obj: BacktestRun) -> str:
        r = obj.result
        if not r:
            return "-"
        blocks = ", ".join(f"{k} {v}" for k, v in r["blocks"].items()) or "none"
        return format_html(
            "P&amp;L {} USD = options {} + hedge {} − commissions {}<br>hedges {} ({} shares), max drawdown {} USD, "
            "sharpe {}<br>blocked ticks: {}<br>{} ticks, {} path",
            f"{r['pnl_total_usd']:,.2f}", f"{r['pnl_options_usd']:,.2f}", f"{r['pnl_hedge_usd']:,.2f}",
            f"{r['commissions_usd']:,.2f}", r["hedges"], f"{r['hedged_shares']:,.0f}", f"{r['max_drawdown_usd']:,.2f}",
            "-" if r["sharpe"] is None else f"{r['sharpe']:.2f}", blocks, r["ticks"], r.get("path", ""))

    def save_model(self, request: HttpRequest, obj: BacktestRun, form: Any, change: bool) -> None:
        data = form.cleaned_data
        try:
            run = services.backtest_run_enqueue(
                dataset=data.get("dataset"), synthetic=data.get("synthetic_spec"), params=data["params_parsed"],
                start_position=data["start_position"], user=request.user.get_username(), path=data["path_choice"])
        except ConfigError as exc:  # the form validated already; a race (dataset deleted) lands here
            self.message_user(request, f"refused: {exc}", level=messages.ERROR)
            return
        obj.pk = run.pk
        self.message_user(request, f"backtest #{run.pk} queued for the worker")

    @admin.action(description="Cancel the selected runs (queued or running)")
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        done = 0
        for run in queryset.filter(state__in=ACTIVE_STATES):
            try:
                services.backtest_run_cancel(run=run, user=request.user.get_username())
                done += 1
            except BacktestStateError:
                continue  # finished meanwhile
        self.message_user(request, f"{done} run(s) cancelled")

    @admin.action(description="Queue the selected runs again (same data, params and start position)")
    def requeue(self, request: HttpRequest, queryset: Any) -> None:
        queued = []
        for run in queryset:
            try:
                new = services.backtest_run_enqueue(dataset=run.dataset, synthetic=run.synthetic, params=run.params,
                                                    start_position=run.start_position,
                                                    user=request.user.get_username())
            except ConfigError as exc:
                self.message_user(request, f"#{run.pk} refused: {exc}", level=messages.ERROR)
                continue
            queued.append(f"#{new.pk}")
        if queued:
            self.message_user(request, f"queued {', '.join(queued)}")


@admin.register(Sweep)
class SweepAdmin(_QueuedAdmin):
    add_form = SweepForm
    add_fields = ("name", "dataset", "synthetic_text", "grid_text", "base_text", "objective", "start_position")
    list_display = ("id", "name", "state", "progress_pct", "objective", "runs_done", "runs_total", "best",
                    "created_by", "created_at")
    list_filter = ("state", "objective")
    readonly_fields = ("name", "dataset", "synthetic", "spec", "objective", "start_position", "state", "progress",
                       "runs_total", "runs_done", "error", "ranking", "created_by", "created_at", "started_at",
                       "finished_at")
    exclude = ("results",)
    actions = ["cancel"]

    @admin.display(description="progress")
    def progress_pct(self, obj: Sweep) -> str:
        return f"{obj.progress} %"

    @admin.display(description="best")
    def best(self, obj: Sweep) -> str:
        if not obj.results or obj.results[0].get("rank") != 1:
            return "-"
        top = obj.results[0]
        return f"#{top['run_id']} {top['params']} → {top['objective']:.2f}"

    @admin.display(description="ranking (best first)")
    def ranking(self, obj: Sweep) -> str:
        if not obj.results:
            return "-"
        def cells(row: dict[str, Any]) -> tuple[Any, ...]:
            blocks = ", ".join(f"{k} {v}" for k, v in (row.get("blocks") or {}).items()) or "-"
            return (row.get("rank") or "-", row["run_id"], json.dumps(row["params"]),
                    "-" if row.get("objective") is None else f"{row['objective']:,.2f}",
                    "-" if row.get("pnl_total_usd") is None else f"{row['pnl_total_usd']:,.2f}",
                    row.get("hedges", "-"), blocks if row["state"] == "done" else row.get("error"))

        body = format_html_join("", "<tr><td>{}</td><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                                "<td>{}</td></tr>", (cells(row) for row in obj.results[:50]))
        return format_html("<table><tr><th>rank</th><th>run</th><th>params</th><th>objective</th><th>P&amp;L USD</th>"
                           "<th>hedges</th><th>blocked ticks by guard</th></tr>{}</table>", body)

    def save_model(self, request: HttpRequest, obj: Sweep, form: Any, change: bool) -> None:
        data = form.cleaned_data
        try:
            sweep = services.sweep_enqueue(
                dataset=data.get("dataset"), synthetic=data.get("synthetic_spec"), grid=data["grid_parsed"],
                objective=data["objective"], base=data["base_parsed"], start_position=data["start_position"],
                name=data.get("name") or "", user=request.user.get_username())
        except ConfigError as exc:
            self.message_user(request, f"refused: {exc.field}: {exc.reason}", level=messages.ERROR)
            return
        obj.pk = sweep.pk
        self.message_user(request, f"sweep #{sweep.pk}: {sweep.runs_total} runs queued for the worker")

    @admin.action(description="Cancel the selected sweeps")
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        done = 0
        for sweep in queryset.filter(state__in=ACTIVE_STATES):
            try:
                services.sweep_cancel(sweep=sweep, user=request.user.get_username())
                done += 1
            except BacktestStateError:
                continue
        self.message_user(request, f"{done} sweep(s) cancelled")


@admin.register(MarketDataset)
class MarketDatasetAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "source", "ticks", "first_ts", "last_ts", "has_iv", "created_by", "created_at")
    list_filter = ("source", "has_iv")
    search_fields = ("name",)
    readonly_fields = ("name", "source", "file", "ticks", "first_ts", "last_ts", "has_iv", "meta", "created_by",
                       "created_at")
    actions = ["queue_default_backtest"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DatasetImportForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("name", "csv_file") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: MarketDataset, form: Any, change: bool) -> None:
        import io

        upload = form.cleaned_data["csv_file"]
        text = io.TextIOWrapper(upload.file, encoding="utf-8", newline="")
        try:
            dataset = services.dataset_import_csv(name=form.cleaned_data["name"] or upload.name, file=text,
                                                  source="upload", user=request.user.get_username(),
                                                  original_name=upload.name)
        except DataFileError as exc:
            self.message_user(request, f"refused, nothing imported: line {exc.line}: {exc.reason}", level=messages.ERROR)
            return
        except (ConfigError, UnicodeDecodeError) as exc:
            self.message_user(request, f"refused, nothing imported: {exc}", level=messages.ERROR)
            return
        obj.pk = dataset.pk
        self.message_user(request, f"dataset #{dataset.pk}: {dataset.ticks} ticks imported")

    @admin.action(description="Queue a backtest of each selected dataset with default params")
    def queue_default_backtest(self, request: HttpRequest, queryset: Any) -> None:
        queued = [services.backtest_run_enqueue(dataset=d, params={}, user=request.user.get_username())
                  for d in queryset]
        self.message_user(request, "queued " + ", ".join(f"#{r.pk}" for r in queued))


@admin.register(DailyStats)
class DailyStatsAdmin(admin.ModelAdmin):
    list_display = ("trading_date", "hedges", "pnl", "updated_at")
    readonly_fields = ("trading_date", "stats", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="hedges")
    def hedges(self, obj: DailyStats) -> Any:
        return obj.stats.get("hedges")

    @admin.display(description="P&L USD")
    def pnl(self, obj: DailyStats) -> Any:
        value = obj.stats.get("pnl_usd")
        return "-" if value is None else f"{value:,.2f}"
