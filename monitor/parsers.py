"""The API's JSON parser: a body nested deeper than MAX_JSON_DEPTH, or carrying a NUL character (which PostgreSQL's
jsonb cannot store), is a 400 that names the field, never a 500 (Python's parser would recurse into a crash)."""
from __future__ import annotations

import io
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser

from bifrost.jsonlimits import MAX_JSON_DEPTH, json_problem, json_text_problem


class SafeJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        # One level more than any field may hold (the body's own object): deeper cannot be parsed safely.
        problem = json_text_problem(raw, MAX_JSON_DEPTH + 1)
        if problem is not None:
            why, field = problem
            raise ValidationError({field or "non_field_errors": [why]})
        data = super().parse(io.BytesIO(raw), media_type, parser_context)
        # A NUL usually comes escaped (\u0000): it shows in what the text parses to, field by field.
        for field, value in (data.items() if isinstance(data, dict) else [("non_field_errors", data)]):
            found = json_problem(value) or json_problem(field)
            if found is not None:
                raise ValidationError({str(field): [found]})
        return data
