"""Backtests in the admin control room: datasets (import a CSV, large ones through a worker), runs and sweeps (queued
through the same services as the API, then read-only evidence), cancel actions, and the daily statistics rollup.

Queueing (add, requeue, queue a default backtest) needs the model's add permission AND the researcher or operator
role, and spends the user's queue budget (the API's); cancelling needs the change permission AND
`backtests.selectors.cancel_allowed` (an operator, or the researcher who queued it)."""
from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from backtests import services
from backtests.errors import BacktestStateError
from backtests.forms import BacktestRunForm, DatasetImportForm, SweepForm
from backtests.models import ACTIVE_STATES, BacktestRun, DailyStats, DatasetImport, MarketDataset, Sweep
from backtests.selectors import CANCEL_REFUSED, cancel_allowed
from backtests.throttles import queue_budget_spend, queue_refusal
from monitor.permissions import is_researcher
from trading.errors import BifrostError, ConfigError


def _may(request: HttpRequest, action: str, model: type[Any]) -> bool:
    """The Django model permission `action` (add, change) on `model`."""
    return bool(request.user.has_perm(f"{model._meta.app_label}.{get_permission_codename(action, model._meta)}"))


def _may_queue(request: HttpRequest) -> bool:
    """Queue backtests: the add_backtestrun permission and the researcher or operator role."""
    return _may(request, "add", BacktestRun) and is_researcher(request.user)


class _RefusalAwareAdmin(admin.ModelAdmin):
    """An add that `save_model` refused or handed to a worker (it leaves the object without a key and says why) is
    neither logged nor announced as "added successfully": the user goes back to the changelist with the message."""

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None if obj.pk is None else super().log_addition(request, obj, message)

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        if obj.pk is None:
            return HttpResponseRedirect(reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_changelist"))
        return super().response_add(request, obj, post_url_continue)


class _QueuedAdmin(_RefusalAwareAdmin):
    """Queued through a service on add; afterwards the record is evidence (read only)."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and is_researcher(request.user)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Offer the cancel action: the change permission and a role that may cancel something (per record, the
        action asks `cancel_allowed`)."""
        return _may(request, "change", self.model) and is_researcher(request.user)

    def has_queue_permission(self, request: HttpRequest) -> bool:
        return _may_queue(request)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = self.add_form
            return super().get_form(request, obj, change=change, **kwargs).for_request(request)
        return super().get_form(request, obj, change=change, **kwargs)

    def _cancel(self, request: HttpRequest, queryset: Any, cancel: Any, noun: str) -> None:
        done, refused = 0, []
        for record in queryset.filter(state__in=ACTIVE_STATES):
            if not cancel_allowed(user=request.user, record=record):
                refused.append(f"#{record.pk}")
                continue
            try:
                cancel(record, request.user.get_username())
                done += 1
            except BacktestStateError:
                continue  # finished meanwhile
        self.message_user(request, f"{done} {noun}(s) cancelled")
        if refused:
            self.message_user(request, f"not cancelled {', '.join(refused)}: {CANCEL_REFUSED}", level=messages.ERROR)

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
        except BifrostError as exc:  # the form validated already; a race (dataset deleted) lands here
            self.message_user(request, f"refused, nothing queued: {exc}", level=messages.ERROR)
            return
        obj.pk = run.pk
        self.message_user(request, f"backtest #{run.pk} queued for the worker")

    @admin.action(description="Cancel the selected runs (queued or running)", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        self._cancel(request, queryset, lambda run, user: services.backtest_run_cancel(run=run, user=user), "run")

    @admin.action(description="Queue the selected runs again (same data, params and start position)",
                  permissions=["queue"])
    def requeue(self, request: HttpRequest, queryset: Any) -> None:
        _queue_each(self, request, queryset, lambda run: services.backtest_run_enqueue(
            dataset=run.dataset, synthetic=run.synthetic, params=run.params, start_position=run.start_position,
            user=request.user.get_username()))


def _queue_each(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: Any, enqueue: Any) -> None:
    """Queue one backtest per selected record, each spending one of the user's queue budget; stop when it is spent."""
    queued: list[str] = []
    for record in queryset:
        wait_s = queue_budget_spend(request)
        if wait_s is not None:
            model_admin.message_user(request, f"#{record.pk} and the rest not queued: {queue_refusal(wait_s)}",
                                     level=messages.ERROR)
            break
        try:
            new = enqueue(record)
        except BifrostError as exc:
            model_admin.message_user(request, f"#{record.pk} refused: {exc}", level=messages.ERROR)
            continue
        queued.append(f"#{new.pk}")
    if queued:
        model_admin.message_user(request, f"queued {', '.join(queued)}")


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
        except BifrostError as exc:  # the form validated already; a race (dataset deleted) lands here
            self.message_user(request, f"refused, nothing queued: {exc}", level=messages.ERROR)
            return
        obj.pk = sweep.pk
        self.message_user(request, f"sweep #{sweep.pk}: {sweep.runs_total} runs queued for the worker")

    @admin.action(description="Cancel the selected sweeps", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        self._cancel(request, queryset, lambda sweep, user: services.sweep_cancel(sweep=sweep, user=user), "sweep")


@admin.register(MarketDataset)
class MarketDatasetAdmin(_RefusalAwareAdmin):
    list_display = ("id", "name", "source", "ticks", "first_ts", "last_ts", "has_iv", "created_by", "created_at")
    list_filter = ("source", "has_iv")
    search_fields = ("name",)
    readonly_fields = ("name", "source", "file", "ticks", "first_ts", "last_ts", "has_iv", "meta", "created_by",
                       "created_at")
    actions = ["queue_default_backtest"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Importing is heavy work, like queueing: the add permission and the researcher or operator role."""
        return super().has_add_permission(request) and is_researcher(request.user)

    def has_queue_permission(self, request: HttpRequest) -> bool:
        return _may_queue(request)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DatasetImportForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("name", "csv_file") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: MarketDataset, form: Any, change: bool) -> None:
        """The form parsed a small file in full (`ticks`): store it. A larger one is staged for a worker."""
        upload, ticks = form.cleaned_data["csv_file"], form.cleaned_data.get("ticks")
        name, user = form.cleaned_data["name"] or upload.name, request.user.get_username()
        try:
            if ticks is None:
                job = services.dataset_import_enqueue(name=name, upload=upload, user=user)
                self.message_user(request, f"import #{job.pk} of {upload.name} ({job.size_bytes / services.MB:,.1f} "
                                           "MB) queued: a worker parses it; its progress and outcome are under "
                                           "Dataset imports")
                return
            dataset = services.dataset_create(name=name, ticks=ticks, source="upload", user=user,
                                              meta={"original_name": upload.name})
        except ConfigError as exc:
            self.message_user(request, f"refused, nothing imported: {exc}", level=messages.ERROR)
            return
        obj.pk = dataset.pk
        self.message_user(request, f"dataset #{dataset.pk}: {dataset.ticks} ticks imported")

    @admin.action(description="Queue a backtest of each selected dataset with default params", permissions=["queue"])
    def queue_default_backtest(self, request: HttpRequest, queryset: Any) -> None:
        _queue_each(self, request, queryset, lambda dataset: services.backtest_run_enqueue(
            dataset=dataset, params={}, user=request.user.get_username()))


@admin.register(DatasetImport)
class DatasetImportAdmin(admin.ModelAdmin):
    """Uploads too large for the web request, parsed by a worker: progress, and the outcome (the dataset, or the
    line and reason it was refused for)."""

    list_display = ("id", "name", "state", "progress_pct", "size_mb", "dataset", "error", "created_by", "created_at",
                    "finished_at")
    list_filter = ("state",)
    readonly_fields = ("name", "original_name", "size_bytes", "state", "progress", "error", "dataset", "task_id",
                       "created_by", "created_at", "started_at", "finished_at")
    exclude = ("file",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads start at Market datasets → Add

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="progress")
    def progress_pct(self, obj: DatasetImport) -> str:
        return f"{obj.progress} %"

    @admin.display(description="size MB")
    def size_mb(self, obj: DatasetImport) -> str:
        return f"{obj.size_bytes / services.MB:,.1f}"


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
