"""The commander's window: a django-q2 schedule every 5 minutes whose task decides itself (trading day, US/Eastern
time, once a day) whether the scheduled run is due."""
from django.db import migrations

NAME = "bifrost: commander window"


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(name=NAME, defaults={"func": "trading.tasks.commander_window_task",
                                                           "schedule_type": "I", "minutes": 5, "repeats": -1})


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("trading", "0007_commander_run_command"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create, remove)]
