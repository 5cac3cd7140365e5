"""The lamp page: one look tells whether Bifrost is healthy, and why not."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from monitor.permissions import is_operator, is_viewer
from monitor.selectors import status_payload_get


@login_required
def lamp_page(request: HttpRequest) -> HttpResponse:
    if not is_viewer(request.user):
        return render(request, "monitor/forbidden.html", status=403)
    return render(request, "monitor/lamp.html", {
        "status": status_payload_get(),
        "is_operator": is_operator(request.user),
    })
