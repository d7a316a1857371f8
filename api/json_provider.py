"""Flask's JSON responses through orjson (a C encoder), keeping Flask's own encoder for
anything orjson would spell differently or cannot encode (datetimes, decimals, integers
beyond 64 bits): those raise here and take the stdlib path."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class FastJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if not kwargs.get("indent"):
            try:
                return orjson.dumps(obj, option=_OPTIONS).decode()
            except TypeError:  # orjson.JSONEncodeError is one
                pass
        return super().dumps(obj, **kwargs)
