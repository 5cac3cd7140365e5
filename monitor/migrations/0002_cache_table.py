"""The shared cache's table (settings.CACHES without Redis): throttles and rate limits agree across processes."""
from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("monitor", "0001_alerts")]
    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
