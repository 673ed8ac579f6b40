"""Reading a JSON data file with one clear error when it is missing or not JSON."""
from __future__ import annotations

import json

from .errors import E2TError


def parse(text: str | bytes):
    """``json.loads``, with nesting too deep for Python's recursion raised as a JSONDecodeError
    (a ValueError, like every other way the text can fail to be JSON) instead of a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text if isinstance(text, str) else "", 0) from None


def read_json(path: str, what: str, missing: str):
    """The parsed file; E2TError ``<path>: <missing>`` if absent, ``cannot read <what>`` if broken."""
    try:
        with open(path) as f:
            return parse(f.read())
    except FileNotFoundError:
        raise E2TError(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise E2TError(f"{path}: cannot read {what} ({e})") from None
