"""Writes of the control room's own: acknowledging and silencing alerts."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db.models.functions import Now

from monitor.alerts import ALERT_KINDS
from monitor.models import Alert, AlertSilence
from trading.errors import FieldError
from trading.services import operation_log


class AlertError(FieldError):
    """An alert request was refused (unknown kind, a time in the past)."""


def alert_ack(*, alert_id: int, user: str) -> Alert:
    """Acknowledge an alert: it is no longer repeated (its resolved message still comes). Idempotent."""
    if Alert.objects.filter(pk=alert_id, acked_at__isnull=True).update(acked_by=user, acked_at=Now()):
        operation_log(kind="alert_acked", actor=user, message=f"alert #{alert_id} acknowledged",
                      data={"alert_id": alert_id})
    return Alert.objects.get(pk=alert_id)


def alert_silence_create(*, kinds: Sequence[str], until: datetime, user: str, reason: str = "") -> AlertSilence:
    unknown = sorted(set(kinds) - ALERT_KINDS)
    if not kinds or unknown:
        raise AlertError("kinds", f"unknown alert kind(s) {unknown}; known: {', '.join(sorted(ALERT_KINDS))}"
                         if unknown else "name at least one alert kind")
    silence = AlertSilence.objects.create(kinds=list(dict.fromkeys(kinds)), until=until, reason=reason[:500],
                                          created_by=user)
    operation_log(kind="alerts_silenced", actor=user, message=f"alerts {', '.join(silence.kinds)} silenced until "
                  f"{until.isoformat()}" + (f": {reason}" if reason else ""), data={"silence_id": silence.pk})
    return silence
