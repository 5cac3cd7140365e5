"""One error shape for the whole API: {"detail": ..., "errors": {field: [...]}} with a 4xx code."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        detail = exc.detail
        errors = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        fields = ", ".join(errors)
        response.data = {"detail": f"invalid input: {fields}", "errors": errors}
    else:
        data = response.data if isinstance(response.data, dict) else {"detail": response.data}
        response.data = {"detail": data.get("detail", str(exc)), "errors": {}}
    return response


# ---- Django's own errors on /api/ get the same shape: an unknown path (404), a body too big (400), a crash (500)

def _json_error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "errors": {}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json_error(400, f"bad request: {exception}" if str(exception) else "bad request")
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json_error(404, f"no API endpoint at {request.path}")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json_error(500, "internal error (it is logged)")
    return defaults.server_error(request)
