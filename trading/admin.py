"""The admin control room: the daemon's records (read-only), control commands and strategy configs."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from trading.commander import commander_request, strategy_sending_set
from trading.daemon.journal import DEAD_LETTER_NAME, rejected_records
from trading.errors import ConfigError, ControlCommandError
from trading.models import (
    AccountSnapshot,
    CommanderRun,
    ControlCommand,
    ControlState,
    DaemonLease,
    Decision,
    Fill,
    ManagedLeg,
    Operation,
    Order,
    PortfolioSnapshot,
    Position,
    SinkProgress,
    StatusCurrent,
    StatusHistory,
    Strategy,
    StrategyConfig,
    StrategyIntent,
)

admin.site.site_header = "Bifrost control room"
admin.site.site_title = "Bifrost"
admin.site.index_title = "Operations"
admin.site.site_url = "/"  # "View site" leads to the lamp page


class ReadOnlyAdmin(admin.ModelAdmin):
    """What the daemon wrote is evidence: it is read here, never edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ("ts", "kind", "actor", "message", "order_ref", "side", "qty", "price", "trading_state")
    list_filter = ("kind", "actor", ("ts", admin.DateFieldListFilter))
    search_fields = ("message", "order_ref", "kind", "actor")
    date_hierarchy = "ts"


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "order_ref", "intent", "side", "qty", "symbol", "order_type", "state",
                    "filled_qty", "avg_price", "account", "mode", "trace", "message")

    @admin.display(description="decision, fills")
    def trace(self, order: Order) -> str:
        """One click from an order to the decision that sent it and to its executions."""
        ref = quote_plus(order.order_ref)
        return format_html('<a href="{}">decision</a> · <a href="{}">fills</a>',
                           f"{reverse('admin:trading_decision_changelist')}?order_ref={ref}",
                           f"{reverse('admin:trading_fill_changelist')}?order_ref={ref}")
    list_filter = ("state", "intent", "side", ("created_at", admin.DateFieldListFilter))
    search_fields = ("order_ref", "message")
    date_hierarchy = "created_at"


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ("ts", "exec_id", "order_ref", "side", "qty", "symbol", "price", "commission")
    list_filter = ("side", ("ts", admin.DateFieldListFilter))
    search_fields = ("exec_id", "order_ref")
    date_hierarchy = "ts"


class ReasonFilter(admin.SimpleListFilter):
    title = "block reason"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        from trading.core.gates import GATE_REASONS

        return [(r, r) for r in GATE_REASONS]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        # JSON containment is not portable to SQLite: match the quoted code in the stored list.
        return queryset.filter(reasons__icontains=f'"{self.value()}"') if self.value() else queryset


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ("ts", "allowed", "reasons_text", "intent_shares", "net_delta_shares", "spot", "trading_state",
                    "classification", "order_ref")
    list_filter = ("allowed", ReasonFilter, "trading_state", ("ts", admin.DateFieldListFilter))
    search_fields = ("order_ref", "classification")
    date_hierarchy = "ts"

    @admin.display(description="reasons")
    def reasons_text(self, obj: Decision) -> str:
        return ", ".join(obj.reasons) or "-"


@admin.register(ControlCommand)
class ControlCommandAdmin(admin.ModelAdmin):
    """Commands are queued here through the same service as the API; once queued they are evidence."""

    list_display = ("created_at", "command", "state", "created_by", "source", "reason", "result", "acked_at",
                    "done_at")
    list_filter = ("command", "state", "source")
    search_fields = ("reason", "result", "created_by")
    fields = ("command", "reason")

    def has_add_permission(self, request: HttpRequest) -> bool:
        from monitor.permissions import is_operator

        return is_operator(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and self.has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ControlCommand, form: Any, change: bool) -> None:
        from trading.services import control_command_create

        created = control_command_create(command=obj.command, reason=obj.reason, user=request.user.get_username(),
                                         source="admin")
        obj.pk = created.pk
        obj.state = created.state


class StrategyConfigForm(forms.ModelForm):
    class Meta:
        model = StrategyConfig
        fields = ("name", "params", "note")

    def clean_params(self) -> Any:
        from trading.core.params import StrategyParams

        params = self.cleaned_data["params"]
        errors = StrategyParams.validate_all(params if isinstance(params, dict) else {"params": params})
        if errors:
            raise forms.ValidationError([f"{field}: {'; '.join(reasons)}" for field, reasons in errors.items()])
        return params


@admin.register(StrategyConfig)
class StrategyConfigAdmin(admin.ModelAdmin):
    form = StrategyConfigForm
    list_display = ("name", "params_hash", "active", "created_by", "created_at", "note")
    list_filter = ("active",)
    readonly_fields = ("params_hash", "created_by", "created_at", "active")
    actions = ["activate"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        from monitor.permissions import is_operator

        return super().has_change_permission(request, obj) and is_operator(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        from monitor.permissions import is_operator

        return super().has_add_permission(request) and is_operator(request.user)

    def save_model(self, request: HttpRequest, obj: StrategyConfig, form: Any, change: bool) -> None:
        """Configs are immutable: saving an edit creates a new version (the form has validated the params)."""
        from trading.services import strategy_config_create

        created = strategy_config_create(name=obj.name, params=obj.params, user=request.user.get_username(),
                                         note=obj.note)
        obj.pk, obj.params_hash = created.pk, created.params_hash
        self.message_user(request, f"saved as a new version [{created.params_hash[:8]}]; activate it to use it")

    @admin.action(description="Activate the selected config (exactly one)", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: Any) -> None:
        from monitor.permissions import is_operator
        from trading.services import strategy_config_activate

        if not is_operator(request.user):
            self.message_user(request, "activating a config needs the operator role", level=messages.ERROR)
            return
        if queryset.count() != 1:
            self.message_user(request, "select exactly one config to activate", level=messages.ERROR)
            return
        config = queryset.get()
        strategy_config_activate(config=config, user=request.user.get_username())
        self.message_user(request, f"{config} is now active; the daemon uses it from its next start")


@admin.register(DaemonLease)
class DaemonLeaseAdmin(ReadOnlyAdmin):
    list_display = ("name", "owner", "token", "mode", "started_at", "heartbeat_at", "heartbeat_interval",
                    "released_at")


@admin.register(SinkProgress)
class SinkProgressAdmin(ReadOnlyAdmin):
    """How far each daemon's records reached the database, and the records it refused (the dead-letter file)."""

    list_display = ("source", "last_seq", "updated_at")
    change_list_template = "admin/trading/sinkprogress/change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        path = settings.BIFROST_JOURNAL_DIR / DEAD_LETTER_NAME
        return super().changelist_view(request, {**(extra_context or {}), "dead_letter_path": path,
                                                 "rejected": rejected_records(path)})


@admin.register(ControlState)
class ControlStateAdmin(ReadOnlyAdmin):
    list_display = ("paused", "paused_reason", "halted", "halt_reason", "updated_at")


@admin.register(ManagedLeg)
class ManagedLegAdmin(admin.ModelAdmin):
    list_display = ("symbol", "local_symbol", "right", "strike", "expiry", "multiplier", "adopted_qty", "adopted_at",
                    "active")
    list_filter = ("active", "symbol")
    readonly_fields = ("con_id", "symbol", "local_symbol", "right", "strike", "expiry", "multiplier", "adopted_qty",
                       "adopted_at")


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("symbol", "local_symbol", "sec_type", "qty", "avg_cost", "market_price", "managed", "updated_at")
    list_filter = ("managed", "sec_type", "symbol")


@admin.register(AccountSnapshot)
class AccountSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("ts", "account", "net_liquidation", "buying_power", "maintenance_margin", "cash")
    date_hierarchy = "ts"


@admin.register(StatusHistory)
class StatusHistoryAdmin(ReadOnlyAdmin):
    list_display = ("ts", "daemon_state", "trading_state", "verdict")
    list_filter = ("verdict", "daemon_state", "trading_state")
    date_hierarchy = "ts"


@admin.register(StatusCurrent)
class StatusCurrentAdmin(ReadOnlyAdmin):
    list_display = ("ts", "daemon_state", "trading_state", "verdict")


# ---- strategies and the commander ------------------------------------------------------------------------------


def _contract_label(contract: dict[str, Any]) -> str:
    return contract.get("local_symbol") or " ".join(str(contract.get(k) or "") for k in
                                                    ("symbol", "expiry", "strike", "right")).strip()


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    if not rows:
        return format_html("<em>{}</em>", "none")
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join("", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),)
                                                 for row in rows))
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


@admin.register(Strategy)
class StrategyAdmin(admin.ModelAdmin):
    list_display = ("slug", "kind", "enabled", "send_enabled", "capital_allocation")
    list_filter = ("kind", "enabled", "send_enabled")
    actions = ["commander_dry_run"]

    @admin.action(description="Run the commander (dry run) for the selected strategies")
    def commander_dry_run(self, request: HttpRequest, queryset: Any) -> None:
        try:
            run = commander_request(dry_run=True, strategies=[s.slug for s in queryset],
                                    user=request.user.get_username(), source="admin")
        except (ConfigError, ControlCommandError) as exc:
            self.message_user(request, f"refused: {exc}", messages.ERROR)
            return
        level = messages.ERROR if run.state == CommanderRun.State.FAILED else messages.SUCCESS
        self.message_user(request, f"commander run #{run.pk}: {run.state} {run.summary}".strip(), level)

    def save_model(self, request: HttpRequest, obj: Strategy, form: Any, change: bool) -> None:
        """Sending is switched through the audited service, whatever else the form changed."""
        sending = obj.send_enabled
        if change:
            obj.send_enabled = Strategy.objects.get(pk=obj.pk).send_enabled
        else:
            obj.send_enabled = False
        super().save_model(request, obj, form, change)
        strategy_sending_set(strategy=obj, enabled=sending, user=request.user.get_username(), now=timezone.now())


@admin.register(StrategyIntent)
class StrategyIntentAdmin(ReadOnlyAdmin):
    list_display = ("strategy", "updated_at", "status", "error_message")
    list_filter = ("status", "strategy")
    readonly_fields = ("targets",)

    @admin.display(description="target positions")
    def targets(self, obj: StrategyIntent) -> str:
        return _table(("contract", "qty", "price USD"), [(_contract_label(t["contract"]), t["qty"], t["price_usd"])
                                                         for t in obj.target_positions])


@admin.register(PortfolioSnapshot)
class PortfolioSnapshotAdmin(ReadOnlyAdmin):
    list_display = ("taken_at", "account", "net_liquidation", "available_funds")


@admin.register(CommanderRun)
class CommanderRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "executed_at", "trigger", "dry_run", "state", "summary")
    list_filter = ("state", "dry_run", "trigger")
    readonly_fields = ("final_target", "diff", "planned_orders", "skipped", "clipped")

    @admin.display(description="final target")
    def final_target(self, obj: CommanderRun) -> str:
        return self._quantities(obj.decision.get("final_target", []))

    @admin.display(description="diff")
    def diff(self, obj: CommanderRun) -> str:
        return self._quantities(obj.decision.get("diff", []))

    @admin.display(description="orders")
    def planned_orders(self, obj: CommanderRun) -> str:
        return _table(("orderRef", "contract", "action", "qty", "limit USD", "outcome"), [
            (o["order_ref"], _contract_label(o["contract"]), o["action"], o["qty"], o["limit_price_usd"],
             o["outcome"]) for o in obj.orders])

    @admin.display(description="skipped strategies")
    def skipped(self, obj: CommanderRun) -> str:
        return _table(("strategy", "why", "reason"), [(slug, kind, reason) for kind, reasons in
                                                      obj.decision.get("skipped", {}).items()
                                                      for slug, reason in reasons.items()])

    @admin.display(description="clipped")
    def clipped(self, obj: CommanderRun) -> str:
        return _table(("contract", "rule", "from", "to", "strategy"), [
            (_contract_label(c["contract"]), c["rule"], c["from"], c["to"], c.get("strategy", ""))
            for c in obj.decision.get("clipped", [])])

    @staticmethod
    def _quantities(rows: list[dict[str, Any]]) -> str:
        return _table(("contract", "qty"), [(_contract_label(r["contract"]), r["qty"]) for r in rows])
