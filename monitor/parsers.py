"""The API's JSON parser: a body nested deeper than the parser can recurse, or carrying a NUL character (which
PostgreSQL's jsonb cannot store), is a 400 that names the field, never a 500."""
from __future__ import annotations

import io
import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 32
_NESTED = re.compile(rb'"([^"\\]{1,80})"\s*:\s*[\[{](?:\s*[\[{]){16}')


class SafeJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if _too_deep_bytes(raw):
            field = m.group(1).decode(errors="replace") if (m := _NESTED.search(raw)) else "non_field_errors"
            raise ValidationError({field: [f"nested more than {MAX_DEPTH} levels deep"]})
        data = super().parse(io.BytesIO(raw), media_type, parser_context)
        problem = check_json(data)
        if problem is not None:
            raise ValidationError({problem[0]: [problem[1]]})
        return data


def _too_deep_bytes(raw: bytes) -> bool:
    """Nesting depth of the JSON text, counted outside strings, without parsing it (so without recursing)."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def check_json(value: Any, field: str = "non_field_errors", depth: int = 0) -> tuple[str, str] | None:
    """(field, why) for the first part of parsed JSON that no store can keep: too deep, or a NUL character."""
    if depth > MAX_DEPTH:
        return field, f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        return (field, "contains a NUL character") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = key if depth == 0 else field
            if "\x00" in str(key):
                return name, "contains a NUL character"
            found = check_json(item, name, depth + 1)
            if found is not None:
                return found
    if isinstance(value, list):
        for item in value:
            found = check_json(item, field, depth + 1)
            if found is not None:
                return found
    return None
