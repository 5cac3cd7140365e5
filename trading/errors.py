"""Bifrost's exception hierarchy: every refusal names what was wrong (field, line or holder)."""
from __future__ import annotations


class BifrostError(Exception):
    """Base of everything Bifrost raises on purpose."""


class FieldError(BifrostError):
    """A refusal that names the field at fault and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ConfigError(FieldError):
    """A parameter set or setting is invalid; `field` names the culprit."""


class BrokerError(BifrostError):
    """The broker refused or failed a request."""


class DataFileError(BifrostError):
    """A data file is malformed at `line` (1-based, counting the header)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class LeaseHeldError(BifrostError):
    """Another daemon holds a fresh lease."""

    def __init__(self, owner: str, since: str) -> None:
        super().__init__(f"another daemon holds the lease: {owner} (heartbeat {since})")
        self.owner = owner
        self.since = since


class TransitionError(BifrostError):
    """A state machine was asked to take a transition its table does not define."""

    def __init__(self, machine: str, state: str, trigger: str) -> None:
        super().__init__(f"{machine}: no transition from {state!r} on {trigger!r}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class ControlCommandError(FieldError):
    """A control command was refused (unknown command, bad arguments)."""
