"""Opaque keyset-pagination cursors: base64url JSON that clients pass back unchanged."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class BadCursor(ValueError):
    pass


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR_CHARS = 1024  # an issued cursor is ~120 characters


def decode_cursor(cursor: str, keys: set[str]) -> dict[str, Any]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadCursor("is not a cursor this API issued")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise BadCursor("is not a cursor this API issued") from None
    if (
        not isinstance(position, dict)
        or set(position) != keys
        or not all(isinstance(v, str) for v in position.values())
    ):
        raise BadCursor("is not a cursor this API issued")
    return position
