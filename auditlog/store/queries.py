"""Named SQL, loaded once from ``queries.sql``.

Each statement follows a ``-- name: <name>`` header. Keeping SQL in one file (rather than
strings scattered through Python) lets a reader review every query the platform runs, and
keeps identifiers out of f-strings.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import LiteralString, cast

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_named_sql(text: str) -> dict[str, LiteralString]:
    parts = _HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    queries: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        # The file ships with the package and is never built from input: a literal.
        queries[name] = cast(LiteralString, body.strip())
    return queries


class _Queries:
    def __init__(self) -> None:
        self._loaded: dict[str, LiteralString] | None = None

    def __getitem__(self, name: str) -> LiteralString:
        if self._loaded is None:
            text = files("auditlog.store").joinpath("queries.sql").read_text(encoding="utf-8")
            self._loaded = parse_named_sql(text)
        return self._loaded[name]


QUERIES = _Queries()
