"""django-q2 task entry points of the trading app (the queue stores their dotted names)."""
from __future__ import annotations

from django.utils import timezone

from trading.commander import commander_request, commander_window_due
from trading.core.calendar import TradingCalendar
from trading.models import CommanderRun


def commander_window_task() -> str:
    """Every few minutes (django-q2 schedules run in UTC): at the configured US/Eastern time on trading days, queue
    the day's scheduled run. It sends only for strategies whose sending the operator enabled."""
    if not commander_window_due(timezone.now(), TradingCalendar()):
        return "not due"
    run = commander_request(dry_run=False, user="schedule", source="schedule", trigger=CommanderRun.Trigger.SCHEDULED)
    return f"commander run #{run.pk}: {run.state}"
