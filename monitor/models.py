"""Alerts: what the watchdog tells the operator, each delivery to each channel, and the silences operators set."""
from __future__ import annotations

from django.db import models
from django.db.models import Q


class Alert(models.Model):
    """One condition or event worth telling an operator. While it fires, more of the same (same `key`: kind plus
    subject, e.g. `order_rejected:201`, `lamp_red:heartbeat_stale`) only raise its count."""

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    key = models.CharField(max_length=120, db_index=True)
    kind = models.CharField(max_length=40, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.FIRING, db_index=True)
    message = models.TextField()
    reasons = models.JSONField(default=list, blank=True)
    count = models.IntegerField(default=1)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)  # the last message sent (repeats are throttled)
    notified_count = models.IntegerField(default=0)  # `count` as of that message
    acked_by = models.CharField(max_length=150, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [models.UniqueConstraint(fields=["key"], condition=Q(state="firing"),
                                               name="one_firing_alert_per_key")]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.key} ({self.state}, x{self.count})"


class AlertDelivery(models.Model):
    """One message of an alert (firing, a repeat, resolved) to one channel, retried with backoff until delivered."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        SILENCED = "silenced"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=10)  # firing | repeat | resolved
    channel = models.CharField(max_length=20)  # telegram | webhook | email
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.alert.key} {self.event} → {self.channel}: {self.state}"


class AlertSilence(models.Model):
    """Operators silence alert kinds until a time: still recorded, not sent."""

    kinds = models.JSONField()
    until = models.DateTimeField()
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-until", "-id"]

    def __str__(self) -> str:
        return f"{', '.join(self.kinds)} until {self.until:%Y-%m-%d %H:%M}"
