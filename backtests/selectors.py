"""Reads for backtests: who may cancel a run or a sweep (the API, the pages and the admin all ask here)."""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from backtests.models import BacktestRun, Sweep
from monitor.permissions import is_operator, is_researcher

CANCEL_REFUSED = "cancelling needs the operator role, or the researcher role for your own runs and sweeps"


def cancel_allowed(*, user: AbstractBaseUser | AnonymousUser, record: BacktestRun | Sweep) -> bool:
    """Operators cancel any run or sweep; researchers the ones they queued; viewers none."""
    if is_operator(user):
        return True
    return is_researcher(user) and record.created_by == user.get_username()
