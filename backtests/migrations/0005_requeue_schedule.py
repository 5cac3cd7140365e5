"""Every minute: queue again the backtest runs whose worker stopped heart-beating (a worker or machine died)."""
from django.db import migrations

NAME = "bifrost: requeue stale backtest runs"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(name=NAME, defaults={"func": "backtests.tasks.requeue_stale_runs_task",
                                                           "schedule_type": "I", "minutes": 1, "repeats": -1})


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("backtests", "0004_run_heartbeat"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create, remove)]
