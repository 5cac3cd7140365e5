"""One error shape for the whole API: {"detail": ..., "errors": {field: [...]}} with a 4xx code."""
from __future__ import annotations

from typing import Any

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
