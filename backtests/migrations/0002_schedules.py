"""The scheduled django-q2 jobs: the daily statistics rollup and history retention (idempotent: one row per name)."""
from datetime import timedelta

from django.db import migrations
from django.utils import timezone

SCHEDULES = (
    ("bifrost: daily stats rollup", "backtests.tasks.stats_rollup_task"),
    ("bifrost: history retention", "backtests.tasks.history_retention_task"),
)


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    now = timezone.now()
    # 22:30 UTC: after the 16:00 New York close in summer and winter time.
    first = now.replace(hour=22, minute=30, second=0, microsecond=0)
    if first <= now:
        first += timedelta(days=1)
    for name, func in SCHEDULES:
        Schedule.objects.update_or_create(name=name, defaults={"func": func, "schedule_type": "D", "repeats": -1},
                                          create_defaults={"func": func, "schedule_type": "D", "repeats": -1,
                                                           "next_run": first})


def remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name__in=[name for name, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backtests", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create, remove)]
