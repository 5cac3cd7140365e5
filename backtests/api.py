"""API for backtests, sweeps and statistics (DESIGN §6): queue, poll progress, read results, cancel. Viewers read;
queueing needs the researcher or operator role and is throttled per user (scope "queue"); cancelling is for the
run's researcher or any operator (`backtests.selectors.cancel_allowed`)."""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, Throttled, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from backtests import services
from backtests.models import BacktestRun, MarketDataset, Sweep
from backtests.selectors import CANCEL_REFUSED, cancel_allowed
from backtests.stats import PERIODS, stats_report
from backtests.throttles import QUEUE_SCOPE, queue_throttled_reason
from bifrost.jsonlimits import storable_json
from monitor.permissions import CanQueue, CanView
from trading.errors import BifrostError


class NewestFirst(CursorPagination):
    page_size = 50
    ordering = ("-created_at", "-id")


def _refused(exc: BifrostError) -> ValidationError:
    field = getattr(exc, "field", "non_field_errors")
    return ValidationError({field: [getattr(exc, "reason", str(exc))]})


def _dataset(dataset_id: int | None) -> MarketDataset | None:
    if dataset_id is None:
        return None
    dataset = MarketDataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        raise ValidationError({"dataset": [f"no dataset {dataset_id}"]})
    return dataset


class BacktestRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = BacktestRun
        ref_name = "BacktestRun"
        fields = ["id", "state", "progress", "error", "dataset", "synthetic", "params", "params_hash",
                  "start_position", "path", "sweep", "created_by", "created_at", "started_at", "finished_at",
                  "elapsed_s", "result"]


class BacktestRunSummarySerializer(BacktestRunSerializer):
    class Meta(BacktestRunSerializer.Meta):
        ref_name = "BacktestRunSummary"
        fields = [f for f in BacktestRunSerializer.Meta.fields if f != "result"]


class SweepSerializer(serializers.ModelSerializer):
    class Meta:
        model = Sweep
        ref_name = "Sweep"
        fields = ["id", "name", "state", "progress", "runs_total", "runs_done", "error", "dataset", "synthetic",
                  "spec", "objective", "start_position", "created_by", "created_at", "started_at", "finished_at",
                  "results"]


class _ListQueueApi(generics.ListAPIView):
    """GET lists (viewers); POST queues (researchers and operators, within the per-user queue budget)."""

    throttle_scope = QUEUE_SCOPE

    def get_permissions(self) -> list[BasePermission]:
        return [CanQueue()] if self.request.method == "POST" else [CanView()]

    def get_throttles(self) -> list[BaseThrottle]:
        return [ScopedRateThrottle()] if self.request.method == "POST" else []

    def throttled(self, request: Request, wait: float | None) -> None:
        raise Throttled(wait, detail=queue_throttled_reason() + ".")


def _cancel_check(request: Request, record: BacktestRun | Sweep) -> None:
    if not cancel_allowed(user=request.user, record=record):
        raise PermissionDenied(CANCEL_REFUSED)


class BacktestRunListCreateApi(_ListQueueApi):
    pagination_class = NewestFirst
    serializer_class = BacktestRunSummarySerializer
    queryset = BacktestRun.objects.all()

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "BacktestRunInput"

        dataset = serializers.IntegerField(required=False, allow_null=True, default=None)
        synthetic = serializers.DictField(required=False, allow_null=True, default=None, validators=[storable_json])
        params = serializers.DictField(required=False, default=dict, validators=[storable_json])
        start_position = serializers.CharField(required=False, default="straddle:10", max_length=40)

    @extend_schema(request=InputSerializer, responses={201: BacktestRunSummarySerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        try:
            run = services.backtest_run_enqueue(dataset=_dataset(body["dataset"]), synthetic=body["synthetic"],
                                                params=body["params"], start_position=body["start_position"],
                                                user=request.user.get_username())
        except BifrostError as exc:
            raise _refused(exc) from exc
        return Response(BacktestRunSummarySerializer(run).data, status=status.HTTP_201_CREATED)


class BacktestRunGetApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: BacktestRunSerializer})
    def get(self, request: Request, run_id: int) -> Response:
        return Response(BacktestRunSerializer(_run(run_id)).data)


class BacktestRunCancelApi(APIView):
    permission_classes = [CanView]

    @extend_schema(request=None, responses={200: BacktestRunSummarySerializer})
    def post(self, request: Request, run_id: int) -> Response:
        run = _run(run_id)
        _cancel_check(request, run)
        try:
            run = services.backtest_run_cancel(run=run, user=request.user.get_username())
        except BifrostError as exc:
            raise _refused(exc) from exc
        return Response(BacktestRunSummarySerializer(run).data)


def _run(run_id: int) -> BacktestRun:
    run = BacktestRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"no backtest {run_id}")
    return run


class SweepListCreateApi(_ListQueueApi):
    pagination_class = NewestFirst
    serializer_class = SweepSerializer
    queryset = Sweep.objects.all()

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SweepInput"

        dataset = serializers.IntegerField(required=False, allow_null=True, default=None)
        synthetic = serializers.DictField(required=False, allow_null=True, default=None, validators=[storable_json])
        grid = serializers.JSONField(help_text="{name: [values]} (every combination) or [{name: value}, ...]",
                                     validators=[storable_json])
        base = serializers.DictField(required=False, default=dict, validators=[storable_json])
        objective = serializers.ChoiceField(choices=Sweep.Objective.values, default=Sweep.Objective.PNL)
        start_position = serializers.CharField(required=False, default="straddle:10", max_length=40)
        name = serializers.CharField(required=False, default="", allow_blank=True, max_length=200)

    @extend_schema(request=InputSerializer, responses={201: SweepSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body = data.validated_data
        try:
            sweep = services.sweep_enqueue(dataset=_dataset(body["dataset"]), synthetic=body["synthetic"],
                                           grid=body["grid"], base=body["base"], objective=body["objective"],
                                           start_position=body["start_position"], name=body["name"],
                                           user=request.user.get_username())
        except BifrostError as exc:
            raise _refused(exc) from exc
        return Response(SweepSerializer(sweep).data, status=status.HTTP_201_CREATED)


class SweepGetApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: SweepSerializer})
    def get(self, request: Request, sweep_id: int) -> Response:
        return Response(SweepSerializer(_sweep(sweep_id)).data)


class SweepCancelApi(APIView):
    permission_classes = [CanView]

    @extend_schema(request=None, responses={200: SweepSerializer})
    def post(self, request: Request, sweep_id: int) -> Response:
        sweep = _sweep(sweep_id)
        _cancel_check(request, sweep)
        try:
            sweep = services.sweep_cancel(sweep=sweep, user=request.user.get_username())
        except BifrostError as exc:
            raise _refused(exc) from exc
        return Response(SweepSerializer(sweep).data)


def _sweep(sweep_id: int) -> Sweep:
    sweep = Sweep.objects.filter(pk=sweep_id).first()
    if sweep is None:
        raise NotFound(f"no sweep {sweep_id}")
    return sweep


class StatsGetApi(APIView):
    """`backtests.stats.stats_report` as JSON, the same payload as `manage.py stats --format json`: per period and in
    `totals` the hedging figures plus `first_fill_latency_ms` / `complete_fill_latency_ms` ({p50, p95, orders}),
    `round_trips`, `round_trip_wins`, `round_trip_win_rate`, `round_trip_pnl_usd`, `round_trip_mean_pnl_usd` and
    `risk_halts`; at the top `risk_halt_events` ([{ts, trading_date, message}]) and `open_round_trips`."""

    permission_classes = [CanView]

    class QuerySerializer(serializers.Serializer):
        class Meta:
            ref_name = "StatsQuery"

        period = serializers.ChoiceField(choices=PERIODS, default="day")
        since = serializers.DateField(required=False, input_formats=["iso-8601"])
        until = serializers.DateField(required=False, input_formats=["iso-8601"])

    @extend_schema(parameters=[OpenApiParameter("period", OpenApiTypes.STR, enum=list(PERIODS)),
                               OpenApiParameter("since", OpenApiTypes.DATE, description="US/Eastern trading date"),
                               OpenApiParameter("until", OpenApiTypes.DATE, description="inclusive")],
                   responses={200: OpenApiTypes.OBJECT},
                   summary="Hedges, fills, P&L and its distribution, win rate by day and by hedge round trip, "
                           "order-to-fill latency, slippage, risk halts and blocks by reason, from history")
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        args: dict[str, Any] = query.validated_data
        if args.get("since") and args.get("until") and args["since"] > args["until"]:
            raise ValidationError({"until": ["must not be before since"]})
        return Response(stats_report(period=args["period"], since=args.get("since"), until=args.get("until")))
