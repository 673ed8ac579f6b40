"""Reading a JSON data file with one clear error when it is missing or not JSON."""
from __future__ import annotations

import json

from .errors import E2TError


def read_json(path: str, what: str, missing: str):
    """The parsed file; E2TError ``<path>: <missing>`` if absent, ``cannot read <what>`` if broken."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise E2TError(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise E2TError(f"{path}: cannot read {what} ({e})") from None
