from django.apps import AppConfig
from django.conf import settings


class TradingConfig(AppConfig):
    name = "trading"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from trading.calendar_store import FileSessionStore
        from trading.core import calendar

        calendar.use_session_store(FileSessionStore(settings.VAR_DIR / "calendar-cache"))
