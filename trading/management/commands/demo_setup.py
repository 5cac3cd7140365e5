"""`manage.py demo_setup`: migrate, create the admin user and its API token, and a demo strategy config."""
from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from trading.models import Strategy, StrategyConfig
from trading.services import strategy_config_create

# Tuned for the simulated market (always open): hedges, blocks and fills within the first minute.
DEMO_PARAMS: dict[str, object] = {
    "trading_hours_only": False,
    "hedge_threshold_shares": 25,
    "epsilon_band_shares": 10,
    "cooldown_s": 15,
    "min_price_move_bps": 8,
    "max_daily_hedges": 500,
}


class Command(BaseCommand):
    help = "Prepare a fresh machine for the demo (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None:
            password = os.environ.get("BIFROST_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user = User.objects.create_superuser("admin", "admin@localhost", password)
            self.stdout.write(f"created superuser admin, password: {password}")
        else:
            self.stdout.write("superuser admin exists (password unchanged)")
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(f"API token for admin: {token.key}")
        if not StrategyConfig.objects.filter(name="demo").exists():
            strategy_config_create(name="demo", params=DEMO_PARAMS, user="demo_setup", activate=True,
                                   note="tuned for the simulated market")
            self.stdout.write("activated strategy config 'demo'")
        _, created = Strategy.objects.get_or_create(slug="keeper", defaults={
            "name": "Straddle keeper", "kind": "straddle_keeper", "capital_allocation": 0.2,
            "params": {"straddles": 10, "min_dte": 21, "max_dte": 45, "roll_dte": 7}})
        if created:
            self.stdout.write("created strategy 'keeper' (dry-run: `manage.py commander run --dry-run`)")
