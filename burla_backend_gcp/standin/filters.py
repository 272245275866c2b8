"""List filters and paging, as the Compute API and Service Usage accept them.

Filters: one or more `FIELD OP VALUE` terms joined by `AND` (or spaces, or parenthesised), OP
one of `=`, `!=`, `eq`, `ne` (the last two take a regular expression), FIELD a JSON field path
(`status`, `labels.burla-node`, `name`). Anything else is refused with 400 rather than
silently matching everything. Paging: `maxResults`/`pageToken`, the token being an offset.
"""

from __future__ import annotations

import json
import re
from typing import Any, Sequence

from google.protobuf import json_format

from .rest import invalid

_TERM = re.compile(r'\(?\s*([\w.\-]+)\s*(=|!=|:|\beq\b|\bne\b)\s*("[^"]*"|\'[^\']*\'|[^\s()]+)\s*\)?')


def _terms(expression: str) -> list[tuple[str, str, str]]:
    terms, position = [], 0
    text = expression.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if not match:
            raise invalid(f"Invalid value for field 'filter': '{expression}'. Invalid list filter expression.")
        field, op, value = match.groups()
        terms.append((field, op, value.strip("\"'")))
        position = match.end()
        rest = re.match(r"\s*(AND\s+)?", text[position:], re.IGNORECASE)
        position += rest.end()
    return terms


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def matches_filter(message: Any, expression: str) -> bool:
    if not expression:
        return True
    pb = type(message).pb(message) if hasattr(type(message), "pb") else message
    data = json.loads(json_format.MessageToJson(pb))
    for field, op, value in _terms(expression):
        actual = _lookup(data, field)
        text = "" if actual is None else json.dumps(actual) if isinstance(actual, (dict, list)) else str(actual)
        if isinstance(actual, bool):
            text = "true" if actual else "false"
        if op in ("=", ":"):
            ok = text == value
        elif op == "!=":
            ok = text != value
        elif op == "eq":
            ok = re.fullmatch(value, text) is not None
        else:
            ok = re.fullmatch(value, text) is None
        if not ok:
            return False
    return True


def page(items: Sequence, max_results: int, page_token: str, default_size: int = 500) -> tuple[list, str]:
    size = max_results or default_size
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise invalid(f"Invalid value for field 'pageToken': '{page_token}'.") from None
    chosen = list(items[start:start + size])
    return chosen, (str(start + size) if start + size < len(items) else "")
