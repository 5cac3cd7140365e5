"""A third role: researchers read like viewers and queue backtests and sweeps (and cancel their own)."""
from django.db import migrations


def create_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name="researcher")


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="researcher").delete()


class Migration(migrations.Migration):
    dependencies = [("trading", "0003_lease_clock_sink_progress_accounts")]
    operations = [migrations.RunPython(create_group, remove_group)]
