"""The per-tenant hash chain that makes each tenant's log tamper-evident.

Definition (also in docs/integrity.md):

* Each hashed field is rendered as text by PostgreSQL's ``audit_canonical_fields`` (UUIDs
  lowercase, times ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, addresses without prefix length,
  JSON in jsonb's text form), plus ``seq`` in decimal.
* A field's digest is the hex SHA-256 of its UTF-8 text; a NULL field stays ``null``.
* The event's canonical form is the compact JSON object ``{field: digest}`` with sorted keys.
* ``hash = SHA-256(prev_hash || canonical form)``; a tenant's first event has
  ``prev_hash`` = 32 zero bytes.

Because the canonical form commits to each field only through its digest, a field erased
later on a data-subject request keeps its digest beside the row (column ``redacted``), and
the chain still verifies without the erased value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from auditlog.events import RECORD_FIELDS

GENESIS_HASH = bytes(32)

# The order matches audit_canonical_fields() in the database (the stored record's fields),
# with seq appended.
CANONICAL_FIELDS = (*RECORD_FIELDS, "seq")


def field_digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


# The canonical form's keys in sorted order, and where each sits in CANONICAL_FIELDS:
# the object is written from a template rather than through json.dumps(sort_keys=True),
# which gives the same bytes (plain ASCII keys; values are hex digests or null) at a
# fraction of the cost on the drain's hot path. tests/unit/test_chain.py holds the two
# spellings equal.
_SORTED_FIELDS = tuple(sorted(CANONICAL_FIELDS))
_SORTED_POSITIONS = tuple(CANONICAL_FIELDS.index(name) for name in _SORTED_FIELDS)
# Doubled braces: the object's own braces, literal in str.format.
_TEMPLATE = "{{" + ",".join(f'"{name}":{{}}' for name in _SORTED_FIELDS) + "}}"


def _json_value(digest: str | None) -> str:
    return "null" if digest is None else f'"{digest}"'


def canonical_form(
    rendered: Sequence[str | None], seq: int, redacted: Mapping[str, str] | None = None
) -> bytes:
    """The canonical JSON form of one event from its rendered fields (without seq) and seq.

    ``redacted`` maps erased fields to the digests kept for them; those stand in for the
    (now NULL) values."""
    values = [*rendered, str(seq)]
    if len(values) != len(CANONICAL_FIELDS):
        raise ValueError(
            f"expected {len(CANONICAL_FIELDS) - 1} rendered fields, got {len(rendered)}"
        )
    parts = [_json_value(field_digest(values[i])) for i in _SORTED_POSITIONS]
    if redacted:
        for index, name in enumerate(_SORTED_FIELDS):
            if name in redacted:
                parts[index] = json.dumps(redacted[name])
    return _TEMPLATE.format(*parts).encode("ascii")


def link_hash(
    prev_hash: bytes,
    rendered: Sequence[str | None],
    seq: int,
    redacted: Mapping[str, str] | None = None,
) -> bytes:
    return hashlib.sha256(prev_hash + canonical_form(rendered, seq, redacted)).digest()


@dataclass(frozen=True)
class ChainRow:
    seq: int
    prev_hash: bytes
    hash: bytes
    rendered: Sequence[str | None]
    id: str = ""
    redacted: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    id: str
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    head_hash: bytes | None
    first_break: ChainBreak | None


def verify_rows(rows: Iterable[ChainRow], expected_prev: bytes | None = None) -> VerifyResult:
    """Walk rows in seq order and report the first break.

    ``expected_prev`` is the hash the first row must link to (genesis for seq 1); ``None``
    trusts the first row's ``prev_hash``, for verifying a range that starts mid-chain.
    """
    checked = 0
    first_seq: int | None = None
    last_seq: int | None = None
    running = expected_prev
    for row in rows:
        if first_seq is None:
            first_seq = row.seq
        elif last_seq is not None and row.seq != last_seq + 1:
            return _broken(
                checked,
                first_seq,
                last_seq,
                running,
                row,
                f"seq jumps from {last_seq} to {row.seq}",
            )
        if running is not None and row.prev_hash != running:
            return _broken(
                checked,
                first_seq,
                last_seq,
                running,
                row,
                "prev_hash does not match the previous event's hash",
            )
        if link_hash(row.prev_hash, row.rendered, row.seq, row.redacted) != row.hash:
            return _broken(
                checked,
                first_seq,
                last_seq,
                running,
                row,
                "stored fields do not match the event's hash",
            )
        running = row.hash
        last_seq = row.seq
        checked += 1
    return VerifyResult(True, checked, first_seq, last_seq, running, None)


def _broken(
    checked: int,
    first_seq: int | None,
    last_seq: int | None,
    head: bytes | None,
    row: ChainRow,
    reason: str,
) -> VerifyResult:
    return VerifyResult(
        False, checked, first_seq, last_seq, head, ChainBreak(row.seq, row.id, reason)
    )
