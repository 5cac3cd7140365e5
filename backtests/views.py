"""Backtest, sweep and statistics pages: forms that call the same services as the API, charts drawn server-side."""
from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from backtests import charts, services
from backtests.errors import BacktestStateError
from backtests.forms import BacktestRunForm, SweepForm
from backtests.models import BacktestRun, Sweep
from backtests.selectors import CANCEL_REFUSED, cancel_allowed
from backtests.stats import PERIODS, stats_report
from monitor.permissions import CanQueue, is_researcher, viewer_required
from trading.core.calendar import ET
from trading.errors import BifrostError

# What the forms start with: a one-day synthetic market that anyone can replay without data.
DEMO_SYNTHETIC = '{"seed": 1, "days": 1}'
DEMO_PARAMS = '{"trading_hours_only": false}'
DEMO_GRID = '{"cooldown_s": [0, 30, 120], "min_price_move_bps": [0, 10, 25]}'


@viewer_required
def backtest_list(request: HttpRequest) -> HttpResponse:
    """The runs and sweeps, newest first, and the forms that queue them (the admin's forms, the API's services):
    queueing needs the researcher or operator role, and spends the user's queue budget (the API's)."""
    user = request.user.get_username()
    can_queue = is_researcher(request.user)
    run_form = BacktestRunForm(prefix="run", initial={"synthetic_text": DEMO_SYNTHETIC, "params_text": DEMO_PARAMS,
                                                      "start_position": "straddle:10"})
    sweep_form = SweepForm(prefix="sweep", initial={"synthetic_text": DEMO_SYNTHETIC, "grid_text": DEMO_GRID,
                                                    "base_text": DEMO_PARAMS, "start_position": "straddle:10"})
    if request.method == "POST" and not can_queue:
        return _list_page(request, run_form, sweep_form, can_queue=False, refusal=CanQueue.message, status=403)
    if request.method == "POST" and "queue_run" in request.POST:
        run_form = BacktestRunForm.for_request(request)(request.POST, prefix="run")
        if run_form.is_valid():
            data = run_form.cleaned_data
            try:
                run = services.backtest_run_enqueue(
                    dataset=data.get("dataset"), synthetic=data.get("synthetic_spec"), params=data["params_parsed"],
                    start_position=data["start_position"], path=data["path_choice"], user=user)
            except BifrostError as exc:
                _refuse(run_form, exc)
            else:
                return redirect("backtest-detail", run_id=run.pk)
    elif request.method == "POST" and "queue_sweep" in request.POST:
        sweep_form = SweepForm.for_request(request)(request.POST, prefix="sweep")
        if sweep_form.is_valid():
            data = sweep_form.cleaned_data
            try:
                sweep = services.sweep_enqueue(
                    dataset=data.get("dataset"), synthetic=data.get("synthetic_spec"), grid=data["grid_parsed"],
                    objective=data["objective"], base=data["base_parsed"], start_position=data["start_position"],
                    name=data.get("name") or "", user=user)
            except BifrostError as exc:
                _refuse(sweep_form, exc)
            else:
                return redirect("sweep-detail", sweep_id=sweep.pk)
    status = 200
    if run_form.errors or sweep_form.errors:
        status = 429 if run_form.throttled or sweep_form.throttled else 400
    return _list_page(request, run_form, sweep_form, can_queue=can_queue, status=status)


def _list_page(request: HttpRequest, run_form: BacktestRunForm, sweep_form: SweepForm, *, can_queue: bool,
               status: int, refusal: str = "") -> HttpResponse:
    return render(request, "backtests/list.html", {
        "runs": BacktestRun.objects.filter(sweep__isnull=True).select_related("dataset")[:50],
        "sweeps": Sweep.objects.all()[:20],
        "run_form": run_form,
        "sweep_form": sweep_form,
        "can_queue": can_queue,
        "refusal": refusal,
        "queue_role_note": CanQueue.message,
    }, status=status)


def _refuse(form: forms.Form, exc: BifrostError) -> None:
    """A service refusal shown on the form, under the field it names when the form has that field."""
    field = getattr(exc, "field", None)
    reason = getattr(exc, "reason", str(exc))
    if field in form.fields:
        form.add_error(field, reason)
    else:
        form.add_error(None, f"{field}: {reason}" if field else reason)


def _cancel_refused(request: HttpRequest) -> HttpResponse:
    return render(request, "backtests/refused.html", {"reason": CANCEL_REFUSED}, status=403)


@viewer_required
@require_POST
def backtest_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(BacktestRun, pk=run_id)
    if not cancel_allowed(user=request.user, record=run):
        return _cancel_refused(request)
    with contextlib.suppress(BacktestStateError):  # finished meanwhile: the page shows how it ended
        services.backtest_run_cancel(run=run, user=request.user.get_username())
    return redirect("backtest-detail", run_id=run.pk)


@viewer_required
@require_POST
def sweep_cancel(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = get_object_or_404(Sweep, pk=sweep_id)
    if not cancel_allowed(user=request.user, record=sweep):
        return _cancel_refused(request)
    with contextlib.suppress(BacktestStateError):
        services.sweep_cancel(sweep=sweep, user=request.user.get_username())
    return redirect("sweep-detail", sweep_id=sweep.pk)


@viewer_required
def backtest_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(BacktestRun, pk=run_id)
    result: dict[str, Any] = run.result or {}
    figures = {}
    if result:
        split = result.get("pnl_split_curve") or []
        figures = {
            "equity": charts.line_chart([("equity", result.get("equity_curve") or [])], "P&L, USD"),
            "split": charts.line_chart([("options", [(r[0], r[1]) for r in split]),
                                        ("hedge", [(r[0], r[2]) for r in split]),
                                        ("commissions", [(r[0], -r[3]) for r in split if len(r) > 3])], "USD"),
            "hedges": charts.price_with_hedges(result.get("price_curve") or [], result.get("hedge_markers") or []),
            "blocks": charts.bar_chart(sorted(((k, float(v)) for k, v in (result.get("blocks") or {}).items()),
                                              key=lambda kv: -kv[1]), "ticks"),
        }
    source = run.dataset.name if run.dataset else "synthetic " + json.dumps(run.synthetic)
    return render(request, "backtests/detail.html", {"run": run, "result": result, "figures": figures,
                                                     "source": source,
                                                     "can_cancel": cancel_allowed(user=request.user, record=run)})


@viewer_required
def sweep_detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = get_object_or_404(Sweep, pk=sweep_id)
    ranked = sweep.results or []
    varied = (sweep.spec or {}).get("varied") or []
    heat = charts.heat_map("", "", {}, "")
    if len(varied) >= 2:
        x_name, y_name = varied[0], varied[1]
        # Keyed by each value's text: a list-valued parameter (earnings_dates) is not hashable as it is.
        cells = {(charts.value_label(r["params"].get(x_name)), charts.value_label(r["params"].get(y_name))):
                 float(r["objective"]) for r in ranked if r.get("objective") is not None}
        heat = charts.heat_map(x_name, y_name, cells, f"objective ({sweep.objective})")
    guards = sorted({reason for r in ranked for reason in (r.get("blocks") or {})})
    return render(request, "backtests/sweep.html", {"sweep": sweep, "ranked": ranked, "varied": varied,
                                                    "heat": heat, "guards": guards,
                                                    "can_cancel": cancel_allowed(user=request.user, record=sweep)})


class StatsRangeForm(forms.Form):
    """The statistics page's range: whole US/Eastern trading dates, both inclusive (as `manage.py stats`)."""

    since = forms.DateField(required=False, label="since", help_text="first trading date, US/Eastern",
                            widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="until", help_text="last trading date, inclusive",
                            widget=forms.DateInput(attrs={"type": "date"}))
    period = forms.ChoiceField(choices=[(p, f"by {p}") for p in PERIODS], required=False, initial="day",
                               error_messages={"invalid_choice": f"expected one of {', '.join(PERIODS)}, "
                                                                 f"got %(value)r"})

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["period"] = data.get("period") or "day"
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "must not be before since")
        return data


@viewer_required
def stats_page(request: HttpRequest) -> HttpResponse:
    """Statistics over the form's range: per-period charts, the daily P&L histogram, latency, round trips, risk
    halts and blocks by reason. A refused field is shown on the form with a 400."""
    form = StatsRangeForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        error = "; ".join(f"{field}: {message}" for field, messages in form.errors.items() for message in messages)
        return render(request, "backtests/stats.html", {"form": form, "error": error}, status=400)
    data = form.cleaned_data if form.is_bound else {"period": "day"}
    period = data["period"]
    report = stats_report(period=period, since=data.get("since"), until=data.get("until"))
    return render(request, "backtests/stats.html", {"form": form, "report": report, "period": period,
                                                    **_stats_figures(report)})


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100.0


def _stats_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The page's charts, fractions as percentages, and the halts in New York time."""
    periods = report["periods"]
    totals = report["totals"]
    histogram = report["pnl_histogram"]
    figures = {
        "pnl": charts.bar_chart([(p["label"], float(p.get("pnl_usd") or 0.0)) for p in periods[-30:]], "USD"),
        "hedges": charts.bar_chart([(p["label"], float(p.get("hedges") or 0)) for p in periods[-30:]], "hedges"),
        "blocks": charts.bar_chart(sorted(((k, float(v)) for k, v in (totals.get("blocks") or {}).items()),
                                          key=lambda kv: -kv[1]), "decisions"),
        "pnl_histogram": charts.histogram(histogram["edges"], histogram["counts"], "USD", "days"),
    }
    pct = {key: _percent(totals[key]) for key in ("win_rate", "round_trip_win_rate", "realized_vol", "implied_vol")}
    rows = [{**p, "win_pct": _percent(p["win_rate"]), "trip_win_pct": _percent(p["round_trip_win_rate"])}
            for p in periods]
    halts = [{**h, "ts_et": _new_york(h["ts"])} for h in report["risk_halt_events"]]
    open_trips = [{**t, "opened_et": _new_york(t["opened_at"])} for t in report["open_round_trips"]]
    return {"figures": figures, "pct": pct, "rows": rows, "halts": halts, "open_trips": open_trips}


def _new_york(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(ET).strftime("%Y-%m-%d %H:%M:%S %Z")
