"""The lamp page (one look tells whether Bifrost is healthy, and why not), and the two doors for machines:
/healthz for an uptime monitor and /metrics for Prometheus."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from bifrost.ratelimit import allow
from monitor.models import Alert
from monitor.permissions import is_operator, is_viewer, viewer_required
from monitor.selectors import status_payload_get, status_payload_recent
from trading.models import Fill, Order

HEALTH = {"green": ("ok", 200), "yellow": ("degraded", 200), "red": ("down", 503)}


class RateLimitedLoginView(LoginView):
    """The login page, with at most BIFROST_LOGIN_RATE attempts per user name and per address (429 beyond)."""

    template_name = "monitor/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        rate = settings.BIFROST_LOGIN_RATE
        name = request.POST.get("username", "")[:150]
        address = request.META.get("REMOTE_ADDR", "")
        if not (allow(f"login-user:{name}", rate) and allow(f"login-addr:{address}", rate)):
            return render(request, self.template_name, {"form": self.get_form(), "throttled": rate,
                                                        "next": request.POST.get("next", "")}, status=429)
        return super().post(request, *args, **kwargs)


@viewer_required
def lamp_page(request: HttpRequest) -> HttpResponse:
    return render(request, "monitor/lamp.html", {
        "status": status_payload_get(),
        "is_operator": is_operator(request.user),
    })


@require_http_methods(["GET", "HEAD"])
def healthz(request: HttpRequest) -> JsonResponse:
    """No login and no detail: green `ok` 200, yellow `degraded` 200, red for any reason (a dead daemon too) `down`
    503."""
    word, code = HEALTH[status_payload_recent()["lamp"]]
    return JsonResponse({"status": word}, status=code)


@require_http_methods(["GET", "HEAD"])
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, read from the database at scrape time so every web process answers the same."""
    if not settings.BIFROST_METRICS_OPEN and not _viewer(request):
        return JsonResponse({"detail": "metrics need a viewer's token or session (or BIFROST_METRICS_OPEN=1)",
                             "errors": {}}, status=401)
    status = status_payload_recent()
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        g = Gauge(name, doc, list(labels), registry=registry)
        (g.labels(**labels) if labels else g).set(float("nan") if value is None else value)

    lamp = Gauge("bifrost_lamp", "1 for the lamp's colour now, 0 for the others", ["colour"], registry=registry)
    for colour in ("green", "yellow", "red"):
        lamp.labels(colour=colour).set(1.0 if status["lamp"] == colour else 0.0)
    daemon, book, pnl = status["daemon"], status.get("book", {}), status.get("pnl", {})
    gauge("bifrost_heartbeat_age_seconds", "age of the daemon's last lease renewal (database clock)",
          daemon.get("heartbeat_age_s"))
    gauge("bifrost_net_delta_shares", "net delta of the managed book, in shares", book.get("net_delta_shares"))
    gauge("bifrost_hedge_shares", "Bifrost's own hedge shares", book.get("hedge_shares"))
    gauge("bifrost_daily_pnl_usd", "the day's P&L (US/Eastern trading date)", pnl.get("daily_usd"))
    gauge("bifrost_hedges_today", "hedges sent today", status.get("counters", {}).get("daily_hedges"))
    gauge("bifrost_orders_total", "orders Bifrost ever sent", Order.objects.count())
    gauge("bifrost_fills_total", "executions of Bifrost's orders", Fill.objects.count())
    gauge("bifrost_rejects_total", "orders the broker rejected", Order.objects.filter(state="rejected").count())
    gauge("bifrost_journal_backlog", "records the daemon has not confirmed in the database",
          daemon.get("journal_backlog"))
    open_alerts = Gauge("bifrost_alerts_open", "firing alerts by severity", ["severity"], registry=registry)
    counts = dict(Alert.objects.filter(state=Alert.State.FIRING).values_list("severity").annotate(n=Count("id")))
    for severity in Alert.Severity.values:
        open_alerts.labels(severity=severity).set(counts.get(severity, 0))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _viewer(request: HttpRequest) -> bool:
    if is_viewer(request.user):
        return True
    try:
        found = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]
    except AuthenticationFailed:
        return False
    return found is not None and is_viewer(found[0])
