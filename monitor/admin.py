"""Alerts in the admin: what fired, where each message went (or did not), acknowledgements and silences."""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from monitor.alerts import ALERT_KINDS
from monitor.models import Alert, AlertDelivery, AlertSilence
from monitor.permissions import is_operator
from monitor.services import alert_ack


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = ("created_at", "event", "channel", "state", "attempts", "last_error", "delivered_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("last_seen", "severity", "state", "key", "message", "count", "acked_by", "undelivered")
    list_filter = ("state", "severity", "kind", ("last_seen", admin.DateFieldListFilter))
    search_fields = ("key", "message")
    readonly_fields = [f.name for f in Alert._meta.fields]
    inlines = [AlertDeliveryInline]
    actions = ["acknowledge"]

    @admin.display(description="undelivered")
    def undelivered(self, alert: Alert) -> int:
        return alert.deliveries.filter(state=AlertDelivery.State.PENDING).count()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Acknowledge: no more repeats (the resolved message still comes)")
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        if not is_operator(request.user):
            self.message_user(request, "acknowledging alerts needs the operator role", messages.ERROR)
            return
        for alert in queryset:
            alert_ack(alert_id=alert.pk, user=request.user.get_username())
        self.message_user(request, f"{queryset.count()} alert(s) acknowledged")


class AlertSilenceForm(forms.ModelForm):
    kinds = forms.MultipleChoiceField(choices=[(k, k) for k in sorted(ALERT_KINDS)])

    class Meta:
        model = AlertSilence
        fields = ["kinds", "until", "reason"]


@admin.register(AlertSilence)
class AlertSilenceAdmin(admin.ModelAdmin):
    form = AlertSilenceForm
    list_display = ("until", "kinds", "reason", "created_by", "created_at")

    def save_model(self, request: HttpRequest, obj: AlertSilence, form: Any, change: bool) -> None:
        obj.created_by = obj.created_by or request.user.get_username()
        super().save_model(request, obj, form, change)
