"""Backtest, sweep and statistics routes: API (DESIGN §6) and pages."""
from django.urls import path

from backtests import api, views

urlpatterns = [
    path("api/backtests/", api.BacktestRunListCreateApi.as_view(), name="api-backtests"),
    path("api/backtests/<int:run_id>/", api.BacktestRunGetApi.as_view(), name="api-backtest-detail"),
    path("api/backtests/<int:run_id>/cancel/", api.BacktestRunCancelApi.as_view(), name="api-backtest-cancel"),
    path("api/sweeps/", api.SweepListCreateApi.as_view(), name="api-sweeps"),
    path("api/sweeps/<int:sweep_id>/", api.SweepGetApi.as_view(), name="api-sweep-detail"),
    path("api/sweeps/<int:sweep_id>/cancel/", api.SweepCancelApi.as_view(), name="api-sweep-cancel"),
    path("api/stats/", api.StatsGetApi.as_view(), name="api-stats"),
    path("backtests/", views.backtest_list, name="backtests"),
    path("backtests/<int:run_id>/", views.backtest_detail, name="backtest-detail"),
    path("backtests/<int:run_id>/cancel/", views.backtest_cancel, name="backtest-cancel"),
    path("backtests/sweeps/<int:sweep_id>/", views.sweep_detail, name="sweep-detail"),
    path("backtests/sweeps/<int:sweep_id>/cancel/", views.sweep_cancel, name="sweep-cancel"),
    path("stats/", views.stats_page, name="stats"),
]
