"""API routes (DESIGN §6) and the lamp page."""
from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from monitor import api, views

urlpatterns = [
    path("", views.lamp_page, name="lamp"),
    path("login/", views.RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/login/"), name="logout"),
    path("api/status/", api.StatusGetApi.as_view(), name="api-status"),
    path("api/operations/", api.OperationListApi.as_view(), name="api-operations"),
    path("api/orders/", api.OrderListApi.as_view(), name="api-orders"),
    path("api/fills/", api.FillListApi.as_view(), name="api-fills"),
    path("api/decisions/", api.DecisionListApi.as_view(), name="api-decisions"),
    path("api/positions/", api.PositionListApi.as_view(), name="api-positions"),
    path("api/account/", api.AccountGetApi.as_view(), name="api-account"),
    path("api/control/", api.ControlCommandCreateApi.as_view(), name="api-control"),
    path("api/control/<int:command_id>/", api.ControlCommandGetApi.as_view(), name="api-control-detail"),
    path("api/strategies/", api.StrategyListApi.as_view(), name="api-strategies"),
    path("api/commander/runs/", api.CommanderRunListApi.as_view(), name="api-commander-runs"),
    path("api/alerts/", api.AlertListApi.as_view(), name="api-alerts"),
    path("api/alerts/silence/", api.AlertSilenceCreateApi.as_view(), name="api-alerts-silence"),
    path("api/alerts/<int:alert_id>/ack/", api.AlertAckApi.as_view(), name="api-alert-ack"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
