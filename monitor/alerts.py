"""The watchdog's judgement: what in the status, the operations log and supervisord's events is worth telling an
operator away from the screen. An alert is deduplicated by its key (kind plus subject) while it fires, sent again at
most once per BIFROST_ALERT_REPEAT_S (with the count of what happened meanwhile), resolved with one message when it
clears, and delivered to every configured channel with retries and backoff until each takes it.

It runs in its own process (`manage.py watchdog`), never in the daemon: a dead daemon is noticed, and a channel that
hangs can never touch the trading loop. While the database is away it keeps judging and sending from memory and
writes its record when the database is back."""
from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from monitor.models import Alert, AlertDelivery, AlertSilence
from monitor.notify import ChannelError, configured_channels, send
from trading.core.calendar import ET
from trading.models import Operation

log = logging.getLogger(__name__)
RETRY_MIN_S, RETRY_MAX_S = 5.0, 300.0
EVENT_QUIET_S = 600.0  # an occurrence-type alert clears after this long without a new occurrence
BROKER_DOWN_S = 60.0
ORDER_UNKNOWN_S = 30.0


@dataclass(frozen=True, slots=True)
class Observation:
    """Something the watchdog sees now: a standing condition (holds until it clears; `after_s` is how long it must
    hold before it is an alert) or an occurrence (`event`: counted while its alert fires; `one_shot`: told once)."""

    key: str
    kind: str
    severity: str
    message: str
    reasons: tuple[str, ...] = ()
    after_s: float = 0.0
    event: bool = False
    one_shot: bool = False


# Occurrence kinds (the rest are standing conditions): their alerts clear after EVENT_QUIET_S without a new one.
EVENT_KINDS = frozenset({"order_rejected", "record_rejected", "lease_lost", "reconcile_mismatch", "flatten_done",
                         "flatten_failed", "live_mode", "daemon_exited", "daemon_fatal", "strategy_skipped"})
STANDING_KINDS = frozenset({"lamp_red", "lamp_yellow", "risk_halt", "broker_disconnected", "data_stale",
                            "order_unknown", "near_loss_limit", "db_outage"})
ALERT_KINDS = EVENT_KINDS | STANDING_KINDS
# Standing block reasons with an alert kind of their own; every other red reason is `lamp_red:<reason>`.
_OWN_KIND = {"risk_halt": "risk_halt", "broker_disconnected": "broker_disconnected", "data_stale": "data_stale",
             "order_stuck": "order_unknown"}


def standing(payload: dict[str, Any], now: datetime) -> list[Observation]:
    """The conditions in a judged /api/status/ payload (monitor.selectors.status_payload_get)."""
    checks = payload.get("checks", [])
    blocked = [c for c in checks if c["status"] == "blocked"]
    every = tuple(dict.fromkeys(c["reason"] for c in blocked))
    out: list[Observation] = []
    for c in blocked:
        reason, detail = c["reason"], c.get("detail", "")
        kind = _OWN_KIND.get(reason, "lamp_red")
        if kind == "risk_halt":
            out.append(Observation("risk_halt", kind, "critical", f"risk halt: {detail}", every))
        elif kind == "broker_disconnected":
            if not in_restart_window(now):
                out.append(Observation(kind, kind, "critical", f"broker disconnected: {detail}", every,
                                       after_s=BROKER_DOWN_S))
        elif kind == "data_stale":
            out.append(Observation(kind, kind, "critical", f"market data stale: {detail}", every,
                                   after_s=settings.BIFROST_ALERT_RED_S))
        elif kind == "order_unknown":
            out.append(Observation(kind, kind, "critical", f"order outcome unknown, hedging blocked: {detail}", every,
                                   after_s=ORDER_UNKNOWN_S))
        else:
            out.append(Observation(f"lamp_red:{reason}", kind, "critical", f"lamp red: {reason} ({detail})", every,
                                   after_s=settings.BIFROST_ALERT_RED_S))
    degraded = tuple(dict.fromkeys(c["reason"] for c in checks if c["status"] == "degraded"))
    if payload.get("lamp") == "yellow":
        out.append(Observation("lamp_yellow", "lamp_yellow", "warning", f"lamp yellow: {', '.join(degraded)}",
                               degraded, after_s=settings.BIFROST_ALERT_YELLOW_S))
    for c in checks:
        if c["reason"] == "near_loss_limit":
            out.append(Observation("near_loss_limit", "near_loss_limit", "warning", c["detail"], ("near_loss_limit",)))
        elif c["reason"] == "db_unavailable":
            out.append(Observation("db_outage", "db_outage", "critical", f"database outage: {c['detail']}",
                                   ("db_unavailable",)))
    return out


_REJECT_CODE = re.compile(r"rejected: (?:not sent: )?(\d{3,5}):")


def occurrences(operations: Iterable[Operation]) -> list[Observation]:
    """The events in new rows of the operations log."""
    out = []
    for op in operations:
        kind, message = op.kind, op.message
        if kind == "order_rejected":
            code = m[1] if (m := _REJECT_CODE.search(message)) else "other"
            out.append(Observation(f"order_rejected:{code}", kind, "warning", f"order rejected: {message}",
                                   event=True))
        elif kind in ("lease_lost", "lease_takeover"):
            out.append(Observation("lease_lost", "lease_lost", "critical", message, event=True))
        elif kind in ("reconcile_mismatch", "record_rejected"):
            out.append(Observation(kind, kind, "critical", message, event=True))
        elif kind == "flatten_done":
            out.append(Observation(kind, kind, "info", message, event=True, one_shot=True))
        elif kind == "strategy_skipped":
            out.append(Observation(kind, kind, "warning", f"commander: {message}", event=True))
        elif kind == "flatten_failed":
            out.append(Observation(kind, kind, "critical", message, event=True, one_shot=True))
        elif kind == "daemon_start" and " live mode" in message:
            out.append(Observation("live_mode", "live_mode", "warning", f"LIVE trading started: {message}",
                                   event=True, one_shot=True))
    return out


def supervisor_event(headers: dict[str, str], payload: dict[str, str]) -> Observation | None:
    """A supervisord PROCESS_STATE event about the daemon program, as an alert."""
    if payload.get("processname") != "daemon":
        return None
    name = headers.get("eventname", "")
    pid = payload.get("pid", "?")
    if name == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
        return Observation("daemon_exited", "daemon_exited", "critical",
                           f"daemon died (pid {pid}, {payload.get('why', 'unexpected exit')}); supervisord restarts it",
                           event=True)
    if name == "PROCESS_STATE_FATAL":
        return Observation("daemon_fatal", "daemon_fatal", "critical",
                           "supervisord gave up on the daemon (FATAL): it keeps failing at start, most likely its "
                           "configuration; see var/daemon.log", event=True)
    return None


def in_restart_window(now: datetime) -> bool:
    """Inside BIFROST_IB_RESTART_WINDOW ("HH:MM-HH:MM", US/Eastern, may wrap midnight)."""
    window = settings.BIFROST_IB_RESTART_WINDOW
    if not window:
        return False
    start_text, _, end_text = window.partition("-")
    start, end = time.fromisoformat(start_text.strip()), time.fromisoformat(end_text.strip())
    local = now.astimezone(ET).time()
    return start <= local < end if start <= end else (local >= start or local < end)


# ---- the book: what fires, what is sent, what is recorded -------------------------------------------------------


class AlertBook:
    """The watchdog's memory of alerts and their deliveries; the database is its record, written when it answers."""

    def __init__(self, clock: Callable[[], datetime], workers: int = 4) -> None:
        self.clock = clock
        self.firing: dict[str, Alert] = {}
        self.since: dict[str, datetime] = {}  # standing conditions seen, not (yet) alerts: since when
        self.outbox: list[AlertDelivery] = []  # deliveries still to make or to record
        self.dirty: set[int] = set()  # ids of alerts (python id()) changed since the last write
        self._alerts_by_id: dict[int, Alert] = {}
        self._sending: dict[int, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alert-send")
        self.host = socket.gethostname()

    def load(self) -> None:
        """After a restart: alerts still firing and deliveries still pending."""
        for alert in Alert.objects.filter(state=Alert.State.FIRING):
            self.firing[alert.key] = alert
        self.outbox = list(AlertDelivery.objects.filter(state=AlertDelivery.State.PENDING).select_related("alert"))

    # ---- judging ------------------------------------------------------------------------------------------------

    def observe(self, standing_now: list[Observation], events: list[Observation], mode: str) -> None:
        now = self.clock()
        for o in events:
            self._occur(o, now, mode)
        seen = set()
        for o in standing_now:
            seen.add(o.key)
            since = self.since.setdefault(o.key, now)
            alert = self.firing.get(o.key)
            if alert is not None:
                alert.last_seen, alert.message, alert.reasons = now, o.message, list(o.reasons)
                self._touch(alert)
            elif (now - since).total_seconds() >= o.after_s:
                self._fire(o, now, mode)
        for key in [k for k in self.since if k not in seen]:
            del self.since[key]
        for key, alert in list(self.firing.items()):
            if alert.kind in EVENT_KINDS:
                if (now - alert.last_seen).total_seconds() >= EVENT_QUIET_S:
                    self._resolve(alert, now, mode, "no new occurrence for "
                                  f"{EVENT_QUIET_S / 60:g} min")
            elif key not in seen:
                self._resolve(alert, now, mode, "cleared")
        self._repeat(now, mode)

    def _occur(self, o: Observation, now: datetime, mode: str) -> None:
        alert = self.firing.get(o.key)
        if alert is not None:
            alert.count += 1
            alert.last_seen, alert.message = now, o.message
            self._touch(alert)
            return
        alert = self._fire(o, now, mode)
        if o.one_shot:  # told once: nothing to resolve later
            alert.state, alert.resolved_at = Alert.State.RESOLVED, now
            del self.firing[o.key]

    def _fire(self, o: Observation, now: datetime, mode: str) -> Alert:
        alert = Alert(key=o.key, kind=o.kind, severity=o.severity, message=o.message, reasons=list(o.reasons),
                      first_seen=self.since.get(o.key, now), last_seen=now)
        self.firing[o.key] = alert
        log.warning("alert %s: %s", o.key, o.message)
        self._notify(alert, "firing", now, mode)
        return alert

    def _resolve(self, alert: Alert, now: datetime, mode: str, why: str) -> None:
        alert.state, alert.resolved_at = Alert.State.RESOLVED, now
        del self.firing[alert.key]
        log.warning("alert %s resolved (%s)", alert.key, why)
        self._notify(alert, "resolved", now, mode)

    def _repeat(self, now: datetime, mode: str) -> None:
        repeat_s = settings.BIFROST_ALERT_REPEAT_S
        for alert in self.firing.values():
            if alert.acked_at is not None or alert.notified_at is None:
                continue
            if (now - alert.notified_at).total_seconds() < repeat_s:
                continue
            if alert.kind in EVENT_KINDS and alert.count <= alert.notified_count:
                continue
            self._notify(alert, "repeat", now, mode)

    # ---- telling --------------------------------------------------------------------------------------------

    def _notify(self, alert: Alert, event: str, now: datetime, mode: str) -> None:
        payload = {"key": alert.key, "kind": alert.kind, "severity": alert.severity,
                   "state": "resolved" if event == "resolved" else "firing", "count": alert.count,
                   "message": alert.message + (f" ({alert.count - alert.notified_count} more since the last message)"
                                               if event == "repeat" else ""),
                   "reasons": list(alert.reasons), "at": now.isoformat(), "host": self.host, "mode": mode}
        silenced = self._silenced(alert.kind, now)
        for channel in configured_channels():
            self.outbox.append(AlertDelivery(
                alert=alert, event=event, channel=channel, payload=payload, created_at=now, next_attempt_at=now,
                state=AlertDelivery.State.SILENCED if silenced else AlertDelivery.State.PENDING))
        alert.notified_at, alert.notified_count = now, alert.count
        self._touch(alert)

    def _silenced(self, kind: str, now: datetime) -> bool:
        try:
            return any(kind in s.kinds for s in AlertSilence.objects.filter(until__gt=now))
        except DatabaseError:
            return False  # unsure: tell rather than keep quiet

    @property
    def sending(self) -> int:
        """Deliveries on their way right now."""
        return len(self._sending)

    def deliver(self) -> None:
        """Start the deliveries that are due (each in a thread, with its timeout) and take in finished ones."""
        now = self.clock()
        for key, future in list(self._sending.items()):
            if not future.done():
                continue
            delivery = next(d for d in self.outbox if id(d) == key)
            del self._sending[key]
            delivery.attempts += 1
            try:
                future.result()
            except ChannelError as exc:
                delivery.last_error = str(exc)[:1000]
                backoff = min(RETRY_MIN_S * 2 ** (delivery.attempts - 1), RETRY_MAX_S)
                delivery.next_attempt_at = now + timedelta(seconds=backoff)
                log.error("alert %s to %s failed (attempt %d, retry in %g s): %s", delivery.payload["key"],
                          delivery.channel, delivery.attempts, backoff, exc)
            else:
                delivery.state, delivery.delivered_at, delivery.last_error = AlertDelivery.State.DELIVERED, now, ""
        for delivery in self.outbox:
            due = delivery.next_attempt_at is None or delivery.next_attempt_at <= now
            if delivery.state == AlertDelivery.State.PENDING and due and id(delivery) not in self._sending:
                self._sending[id(delivery)] = self._pool.submit(send, delivery.channel, delivery.payload)

    # ---- recording ------------------------------------------------------------------------------------------

    def _touch(self, alert: Alert) -> None:
        self._alerts_by_id[id(alert)] = alert
        self.dirty.add(id(alert))

    def write(self) -> None:
        """Record what changed; deliveries done or set aside leave the outbox once recorded. DatabaseError when the
        database is away: everything stays in memory for the next try."""
        with transaction.atomic():
            for key in list(self.dirty):
                alert = self._alerts_by_id[key]
                if alert.pk is None:
                    alert.save()
                else:
                    alert.save(update_fields=["state", "message", "reasons", "count", "last_seen", "resolved_at",
                                              "notified_at", "notified_count"])
            for delivery in self.outbox:
                delivery.alert = delivery.alert  # re-bind: the alert may have been saved just now
                delivery.save()
            acked = Alert.objects.filter(pk__in=[a.pk for a in self.firing.values() if a.pk is not None],
                                         acked_at__isnull=False)
            for pk, by, at in acked.values_list("pk", "acked_by", "acked_at"):
                alert = next(a for a in self.firing.values() if a.pk == pk)
                alert.acked_by, alert.acked_at = by, at
        self.dirty.clear()
        self._alerts_by_id = {id(a): a for a in self.firing.values()}
        self.outbox = [d for d in self.outbox if d.state == AlertDelivery.State.PENDING]
