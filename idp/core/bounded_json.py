"""JSON parsing with bounds: nesting depth and number of values, checked before the parser runs.

Python's json module recurses once per nesting level: 3,000 nested `{"a":` (18 KB) raise
RecursionError, which no `except ValueError` catches, and every caller then answered 500. Here
a flat scan of the text (strings skipped) refuses anything deeper or wider than the limits with
JsonTooComplex, a ValueError, so each endpoint's usual "not valid JSON" answer applies. Every
JSON an outsider controls goes through `loads`: request bodies (Flask's JSON provider, see
idp.web.security), JWT payloads and what outbound calls bring back.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32       # a JWK set, a WebAuthn credential or a SCIM resource needs under 8
MAX_VALUES = 10_000  # array elements and object members, all levels together

# A JSON string (escapes included) or one structural character.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')


class JsonTooComplex(ValueError):
    """Nested deeper, or holding more values, than the limits allow."""


def check(text: str, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> None:
    """Raise JsonTooComplex when `text` nests deeper than max_depth or holds more than
    max_values members and elements. Malformed text is left to the parser to refuse."""
    depth = values = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise JsonTooComplex(f"JSON nested deeper than {max_depth} levels")
        elif token in "]}":
            depth -= 1
        elif token == ",":
            values += 1
            if values > max_values:
                raise JsonTooComplex(f"JSON holding more than {max_values} values")


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH,
          max_values: int = MAX_VALUES, **kwargs: Any) -> Any:
    """json.loads after `check`; ValueError (JSONDecodeError or JsonTooComplex) on bad input."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    check(text, max_depth=max_depth, max_values=max_values)
    return json.loads(text, **kwargs)
