"""Who may read, who may queue heavy work and who may steer: the `viewer`, `researcher` and `operator` groups
(superusers pass all). Researchers read like viewers and queue backtests and sweeps; operators do everything."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

VIEWER, RESEARCHER, OPERATOR = "viewer", "researcher", "operator"


def is_operator(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and (user.is_superuser or user.groups.filter(name=OPERATOR).exists()))


def is_viewer(user: AbstractBaseUser | AnonymousUser) -> bool:
    return bool(user.is_authenticated and (
        user.is_superuser or user.groups.filter(name__in=(VIEWER, RESEARCHER, OPERATOR)).exists()))


def is_researcher(user: AbstractBaseUser | AnonymousUser) -> bool:
    """May queue backtests and sweeps (researchers and operators)."""
    return bool(user.is_authenticated and (
        user.is_superuser or user.groups.filter(name__in=(RESEARCHER, OPERATOR)).exists()))


class CanView(BasePermission):
    message = "reading needs the viewer or operator role"

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_viewer(request.user)


class CanQueue(BasePermission):
    message = "queueing backtests and sweeps needs the researcher or operator role"

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_researcher(request.user)


class CanOperate(BasePermission):
    message = "control needs the operator role"

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_operator(request.user)


def viewer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """For pages: log in first, then the viewer or operator role, else the 403 page."""
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_viewer(request.user):
            return render(request, "monitor/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return login_required(guarded)

