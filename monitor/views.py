"""The lamp page: one look tells whether Bifrost is healthy, and why not."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from monitor.permissions import is_operator, viewer_required
from monitor.selectors import status_payload_get


@viewer_required
def lamp_page(request: HttpRequest) -> HttpResponse:
    return render(request, "monitor/lamp.html", {
        "status": status_payload_get(),
        "is_operator": is_operator(request.user),
    })
