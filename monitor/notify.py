"""Alert channels: Telegram, a JSON webhook and e-mail, each configured by the environment and each optional.

A send either delivers or raises ChannelError within SEND_TIMEOUT_S; retries are the watchdog's business."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from trading.errors import BifrostError

SEND_TIMEOUT_S = 5.0
CHANNELS = ("telegram", "webhook", "email")


class ChannelError(BifrostError):
    """A channel did not take a message (down, refusing, too slow)."""


def configured_channels() -> list[str]:
    on = {"telegram": bool(settings.BIFROST_TELEGRAM_BOT_TOKEN and settings.BIFROST_TELEGRAM_CHAT_ID),
          "webhook": bool(settings.BIFROST_ALERT_WEBHOOK_URL),
          "email": bool(settings.BIFROST_ALERT_EMAILS)}
    return [c for c in CHANNELS if on[c]]


def send(channel: str, payload: dict[str, Any]) -> None:
    """Deliver one alert message (the webhook Contract shape, DESIGN §10) to `channel`."""
    _SENDERS[channel](payload)


def text_of(payload: dict[str, Any]) -> str:
    """The message as a person reads it (Telegram, e-mail)."""
    head = "RESOLVED" if payload["state"] == "resolved" else payload["severity"].upper()
    count = f" (x{payload['count']})" if payload["count"] > 1 else ""
    reasons = f"\nreasons: {', '.join(payload['reasons'])}" if payload["reasons"] else ""
    return (f"[Bifrost {payload['mode']} on {payload['host']}] {head}: {payload['message']}{count}{reasons}\n"
            f"{payload['key']} at {payload['at']}")


def _post_json(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as response:  # noqa: S310 - our own setting
            response.read()
    except urllib.error.HTTPError as exc:
        raise ChannelError(f"{url.split('/bot')[0]} answered {exc.code}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ChannelError(f"{url.split('/bot')[0]} unreachable: {exc}") from exc


def _telegram(payload: dict[str, Any]) -> None:
    url = f"{settings.BIFROST_TELEGRAM_API_URL.rstrip('/')}/bot{settings.BIFROST_TELEGRAM_BOT_TOKEN}/sendMessage"
    _post_json(url, {"chat_id": settings.BIFROST_TELEGRAM_CHAT_ID, "text": text_of(payload)})


def _webhook(payload: dict[str, Any]) -> None:
    _post_json(settings.BIFROST_ALERT_WEBHOOK_URL, payload)


def _email(payload: dict[str, Any]) -> None:
    state = "resolved" if payload["state"] == "resolved" else payload["severity"]
    message = EmailMessage(subject=f"[Bifrost {state}] {payload['message'][:120]}", body=text_of(payload),
                           to=settings.BIFROST_ALERT_EMAILS,
                           connection=get_connection(timeout=SEND_TIMEOUT_S, fail_silently=False))
    try:
        message.send()
    except (OSError, TimeoutError) as exc:  # smtplib's errors are OSErrors
        raise ChannelError(f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT}: {exc}") from exc


_SENDERS: dict[str, Callable[[dict[str, Any]], None]] = {"telegram": _telegram, "webhook": _webhook,
                                                         "email": _email}
