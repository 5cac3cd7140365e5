"""JSON Bifrost accepts from outside: nested at most MAX_JSON_DEPTH levels and without NUL characters (PostgreSQL's
jsonb cannot store them), checked without recursing — for the API's parser, its serializers and the forms' JSON
text fields alike."""
from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 20  # parameters and synthetic specs are flat; a grid of list-valued params is 3 levels deep
_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"
_NUL = "contains a NUL character (\\u0000)"


def json_problem(value: Any) -> str | None:
    """Why parsed JSON `value` is refused, or None: too deep, or a NUL character in a string or a key."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return _NUL
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_JSON_DEPTH:
                return _DEEP
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def json_text_problem(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> tuple[str, str | None] | None:
    """Why JSON text is refused before it is parsed (Python's parser recurses, and fails, on deep nesting), and the
    top-level key whose value it is in (None outside an object's values)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = 0
    in_string = escaped = False
    key: str | None = None
    start = 0
    last_string = ""
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                last_string = text[start:i]
        elif char == '"':
            in_string, start = True, i + 1
        elif char == ":" and depth == 1:
            key = last_string
        elif char in "[{":
            depth += 1
            if depth > limit:
                return _DEEP if limit == MAX_JSON_DEPTH else f"nested more than {limit} levels deep", key
        elif char in "]}":
            depth -= 1
    return (_NUL, None) if "\x00" in text else None


def storable_json(value: Any) -> Any:
    """A DRF field validator: refuse `value` (ValidationError on the field) when `json_problem` finds one."""
    from rest_framework.exceptions import ValidationError

    problem = json_problem(value)
    if problem is not None:
        raise ValidationError(problem)
    return value
