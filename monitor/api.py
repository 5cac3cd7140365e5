"""The DRF API of DESIGN §6: status, history lists, positions, account and control. Views parse, call one
service or selector, and render."""
from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from monitor.models import Alert
from monitor.permissions import CanOperate, CanView
from monitor.selectors import account_get, positions_list, status_payload_recent
from monitor.services import AlertError, alert_ack, alert_silence_create
from trading.commander import commander_request
from trading.errors import ConfigError, ControlCommandError
from trading.models import CommanderRun, ControlCommand, Decision, Fill, Operation, Order, Strategy
from trading.services import control_command_create

MAX_LIMIT = 1000


class HistoryPagination(CursorPagination):
    """Newest first by the view's time field, with the id breaking ties so no row is skipped or repeated."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def get_ordering(self, request: Request, queryset: QuerySet[Any], view: Any) -> tuple[str, ...]:
        return (f"-{view.time_field}", "-id")

    def decode_cursor(self, request: Request) -> Cursor | None:
        """A cursor we did not hand out (not base64, a position that is not an instant) is a 400, not a 500."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound as exc:
            raise ValidationError({"cursor": ["invalid cursor"]}) from exc
        if cursor is not None and cursor.position is not None and parse_datetime_or_none(cursor.position) is None:
            raise ValidationError({"cursor": ["invalid cursor"]})
        return cursor


def parse_datetime_or_none(text: str) -> Any:
    try:
        return parse_datetime(text)
    except ValueError:
        return None


class HistoryFilterSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    kind = serializers.ListField(child=serializers.CharField(max_length=40), required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT)
    cursor = serializers.CharField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("since") and attrs.get("until") and attrs["since"] > attrs["until"]:
            raise ValidationError({"until": ["must not be before since"]})
        return attrs


_HISTORY_PARAMS = [
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601, inclusive"),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601, exclusive"),
    OpenApiParameter("kind", OpenApiTypes.STR, many=True, description="repeatable"),
    OpenApiParameter("limit", OpenApiTypes.INT, description=f"page size, at most {MAX_LIMIT}"),
]


class HistoryListApi(ListAPIView):
    """Newest first, cursor-paginated, filtered by time and `kind` (what `kind` means is per list)."""

    permission_classes = [CanView]
    pagination_class = HistoryPagination
    model: type[Any]
    time_field: str
    kind_field: str

    def get_queryset(self) -> QuerySet[Any]:
        params = {k: v for k, v in self.request.query_params.items() if k != "kind"}
        kinds = self.request.query_params.getlist("kind")
        if kinds:
            params["kind"] = kinds
        filters = HistoryFilterSerializer(data=params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        qs = self.model.objects.all()
        if "since" in data:
            qs = qs.filter(**{f"{self.time_field}__gte": data["since"]})
        if "until" in data:
            qs = qs.filter(**{f"{self.time_field}__lt": data["until"]})
        if data.get("kind"):
            qs = self.filter_kind(qs, data["kind"])
        return qs

    def filter_kind(self, qs: QuerySet[Any], kinds: list[str]) -> QuerySet[Any]:
        return qs.filter(**{f"{self.kind_field}__in": kinds})


class OperationListApi(HistoryListApi):
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Operation
            ref_name = "Operation"
            fields = ["id", "ts", "kind", "actor", "message", "order_ref", "side", "qty", "price", "reasons",
                      "trading_state", "params_hash", "data"]

    model, time_field, kind_field = Operation, "ts", "kind"
    serializer_class = OutputSerializer

    @extend_schema(parameters=_HISTORY_PARAMS, summary="The operations log; kind = operation kind")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class OrderListApi(HistoryListApi):
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Order
            ref_name = "Order"
            fields = ["id", "order_ref", "intent", "symbol", "side", "qty", "order_type", "limit_price", "state",
                      "filled_qty", "avg_price", "message", "spot_at_decision", "params_hash", "created_at",
                      "updated_at"]

    model, time_field, kind_field = Order, "created_at", "intent"
    serializer_class = OutputSerializer

    @extend_schema(parameters=_HISTORY_PARAMS, summary="Bifrost's orders; kind = intent (hedge, flatten)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class FillListApi(HistoryListApi):
    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = Fill
            ref_name = "Fill"
            fields = ["id", "exec_id", "order_ref", "symbol", "side", "qty", "price", "commission", "ts"]

    model, time_field, kind_field = Fill, "ts", "side"
    serializer_class = OutputSerializer

    @extend_schema(parameters=_HISTORY_PARAMS, summary="Confirmed executions; kind = side (BUY, SELL)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class DecisionListApi(HistoryListApi):
    class OutputSerializer(serializers.ModelSerializer):
        state = serializers.CharField(source="trading_state")

        class Meta:
            model = Decision
            ref_name = "Decision"
            fields = ["id", "ts", "allowed", "reasons", "intent_shares", "net_delta_shares", "spot", "state",
                      "classification", "order_ref", "params_hash"]

    model, time_field, kind_field = Decision, "ts", "reasons"
    serializer_class = OutputSerializer

    def filter_kind(self, qs: QuerySet[Any], kinds: list[str]) -> QuerySet[Any]:
        """kind = `allowed`, `blocked` or a block reason (any of them matches)."""
        match = Q()
        for kind in kinds:
            if kind in ("allowed", "blocked"):
                match |= Q(allowed=kind == "allowed")
            else:  # JSON containment is not portable to SQLite: match the quoted code in the stored text
                match |= Q(reasons__icontains=f'"{kind}"')
        return qs.filter(match)

    @extend_schema(parameters=_HISTORY_PARAMS,
                   summary="Every evaluated hedge; kind = a block reason, or allowed / blocked")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class StatusGetApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Lamp, verdict, every reason and check, key figures")
    def get(self, request: Request) -> Response:
        return Response(status_payload_recent())


class PositionListApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: OpenApiTypes.OBJECT},
                   summary="Account positions with mark, P&L, moneyness, greeks and the managed flag")
    def get(self, request: Request) -> Response:
        return Response({"results": positions_list()})


class AccountGetApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: OpenApiTypes.OBJECT}, summary="Account summary and when it was fetched")
    def get(self, request: Request) -> Response:
        account = account_get()
        if account is None:
            raise NotFound("no account summary has been fetched from the broker yet")
        return Response(account)


class ControlCommandOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ControlCommand
        ref_name = "ControlCommand"
        fields = ["id", "command", "state", "result", "reason", "created_by", "created_at", "acked_at", "done_at"]


class ControlCommandCreateApi(APIView):
    permission_classes = [CanOperate]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "control"

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "ControlCommandInput"

        command = serializers.CharField(max_length=40)
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: ControlCommandOutputSerializer},
                   summary="Queue a control command (start is carried out through supervisord)")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            cmd = control_command_create(command=data.validated_data["command"], reason=data.validated_data["reason"],
                                         user=request.user.get_username(), source="api")
        except ControlCommandError as exc:
            raise ValidationError({exc.field: [exc.reason]}) from exc
        return Response(ControlCommandOutputSerializer(cmd).data, status=status.HTTP_201_CREATED)


class ControlCommandGetApi(APIView):
    permission_classes = [CanView]

    @extend_schema(responses={200: ControlCommandOutputSerializer})
    def get(self, request: Request, command_id: int) -> Response:
        cmd = ControlCommand.objects.filter(pk=command_id).first()
        if cmd is None:
            raise NotFound(f"no control command {command_id}")
        return Response(ControlCommandOutputSerializer(cmd).data)


# ---- strategies and the commander ----------------------------------------------------------------------------


class StrategyListApi(APIView):
    permission_classes = [CanView]

    class OutputSerializer(serializers.ModelSerializer):
        latest_intent = serializers.SerializerMethodField()

        class Meta:
            model = Strategy
            ref_name = "Strategy"
            fields = ["slug", "name", "kind", "enabled", "send_enabled", "params", "capital_allocation",
                      "risk_params", "latest_intent"]

        def get_latest_intent(self, obj: Strategy) -> dict[str, Any] | None:
            row = obj.intents.order_by("-updated_at", "-id").first()
            if row is None:
                return None
            return {"id": row.pk, "updated_at": row.updated_at.isoformat(), "status": row.status,
                    "error_message": row.error_message, "metadata": row.metadata,
                    "target_positions": row.target_positions}

    @extend_schema(responses={200: OutputSerializer(many=True)}, summary="Strategies with their latest intent")
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(Strategy.objects.all(), many=True).data)


class CommanderRunListApi(HistoryListApi):
    """GET: commander runs, newest first, with their decision (viewer); POST: queue a run (operator)."""

    class OutputSerializer(serializers.ModelSerializer):
        class Meta:
            model = CommanderRun
            ref_name = "CommanderRun"
            fields = ["id", "executed_at", "trigger", "dry_run", "state", "summary", "requested_by", "strategies",
                      "snapshot", "intents_read", "decision", "orders", "steps"]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "CommanderRunInput"

        dry_run = serializers.BooleanField(default=True)
        strategies = serializers.ListField(child=serializers.SlugField(max_length=50), required=False, default=list,
                                           max_length=50)

    model, time_field, kind_field = CommanderRun, "executed_at", "state"
    serializer_class = OutputSerializer
    throttle_scope = "control"

    def get_permissions(self) -> list[Any]:
        return [CanOperate()] if self.request.method == "POST" else [CanView()]

    def get_throttles(self) -> list[Any]:
        return [ScopedRateThrottle()] if self.request.method == "POST" else []

    @extend_schema(parameters=_HISTORY_PARAMS, summary="Commander runs; kind = run state")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT},
                   summary="Queue a commander run (dry-run by default)")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            run = commander_request(dry_run=data.validated_data["dry_run"],
                                    strategies=data.validated_data["strategies"],
                                    user=request.user.get_username(), source="api")
        except (ConfigError, ControlCommandError) as exc:
            raise ValidationError({exc.field: [exc.reason]}) from exc
        return Response({"id": run.pk, "state": run.state}, status=status.HTTP_201_CREATED)


# ---- alerts ------------------------------------------------------------------------------------------------------


class AlertOutputSerializer(serializers.ModelSerializer):
    deliveries = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        ref_name = "Alert"
        fields = ["id", "key", "kind", "severity", "state", "message", "reasons", "count", "first_seen", "last_seen",
                  "resolved_at", "acked_by", "acked_at", "deliveries"]

    def get_deliveries(self, alert: Alert) -> list[dict[str, Any]]:
        return [{"channel": d.channel, "event": d.event, "state": d.state, "attempts": d.attempts,
                 "last_error": d.last_error, "delivered_at": d.delivered_at} for d in alert.deliveries.all()]


class AlertListApi(HistoryListApi):
    """Alerts, newest first by last seen; `state` firing|resolved, repeatable `kind`, `since` on last seen."""

    model, time_field, kind_field = Alert, "last_seen", "kind"
    serializer_class = AlertOutputSerializer

    def get_queryset(self) -> QuerySet[Any]:
        qs = super().get_queryset().prefetch_related("deliveries")
        state = self.request.query_params.get("state")
        if state is not None:
            if state not in Alert.State.values:
                raise ValidationError({"state": [f"expected one of {', '.join(Alert.State.values)}"]})
            qs = qs.filter(state=state)
        return qs

    @extend_schema(parameters=[*_HISTORY_PARAMS, OpenApiParameter("state", OpenApiTypes.STR,
                                                                   enum=Alert.State.values)],
                   summary="Alerts; kind = alert kind, state = firing or resolved")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class AlertAckApi(APIView):
    permission_classes = [CanOperate]

    @extend_schema(request=None, responses={200: AlertOutputSerializer},
                   summary="Acknowledge an alert: no more repeats (the resolved message still comes); idempotent")
    def post(self, request: Request, alert_id: int) -> Response:
        if not Alert.objects.filter(pk=alert_id).exists():
            raise NotFound(f"no alert {alert_id}")
        return Response(AlertOutputSerializer(alert_ack(alert_id=alert_id, user=request.user.get_username())).data)


class AlertSilenceCreateApi(APIView):
    permission_classes = [CanOperate]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "AlertSilenceInput"

        kinds = serializers.ListField(child=serializers.CharField(max_length=40), min_length=1, max_length=50)
        until = serializers.DateTimeField()
        reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    @extend_schema(request=InputSerializer, responses={201: OpenApiTypes.OBJECT},
                   summary="Silence alert kinds until a time (still recorded, not sent)")
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            silence = alert_silence_create(user=request.user.get_username(), **data.validated_data)
        except AlertError as exc:
            raise ValidationError({exc.field: [exc.reason]}) from exc
        return Response({"id": silence.pk, "kinds": silence.kinds, "until": silence.until,
                         "reason": silence.reason}, status=status.HTTP_201_CREATED)
