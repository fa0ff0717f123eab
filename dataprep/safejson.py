"""``json.loads`` for input data: nesting deeper than Python's recursion limit is a JSONDecodeError like any
other malformed text (the C scanner raises RecursionError, which the readers' ``except ValueError`` miss)."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes | bytearray) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
