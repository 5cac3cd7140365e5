"""The project is wired: settings load, migrations are complete, and the admin answers."""
import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_no_model_change_lacks_a_migration():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_admin_login_page_answers(client):
    response = client.get("/admin/login/")

    assert response.status_code == 200


def test_the_viewer_and_operator_roles_come_with_the_migrations():
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator"}
