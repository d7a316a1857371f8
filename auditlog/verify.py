"""Verifying a tenant's stored chain (used by the CLI and the API's verify endpoint)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from auditlog.chain import GENESIS_HASH, ChainRow, verify_rows
from auditlog.store.queries import QUERIES

_MAX_SEQ = 2**63 - 1


def verify_tenant_chain(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    from_seq: int = 1,
    to_seq: int | None = None,
) -> dict[str, Any]:
    """Check links and hashes for ``seq`` in [from_seq, to_seq]; report the first break.

    The first event checked must link to the event before it (or to the genesis hash when
    it is seq 1); when that earlier event is no longer stored (retention), the range is
    checked from its own first ``prev_hash``. Redacted fields count through the digests
    kept for them.
    """
    params = {"tenant_id": tenant_id, "from_seq": max(from_seq, 1), "to_seq": to_seq or _MAX_SEQ}
    first = conn.execute(QUERIES["first_retained_seq"], params).fetchone()
    start = first[0] if first and first[0] is not None else None
    expected_prev: bytes | None = None
    if start == 1:
        expected_prev = GENESIS_HASH
    elif start is not None:
        prev = conn.execute(
            QUERIES["chain_prev_hash"], {"tenant_id": tenant_id, "seq": start - 1}
        ).fetchone()
        # The event before may have been removed by retention: then the range is checked from
        # its first retained event's own prev_hash.
        expected_prev = bytes(prev[0]) if prev else None
    # A server-side cursor keeps memory flat on long chains; it needs a transaction.
    with conn.transaction(), conn.cursor(name="verify_chain") as cur:
        cur.itersize = 5000
        cur.execute(QUERIES["chain_rows"], params)
        rows = (
            ChainRow(
                seq=seq,
                prev_hash=bytes(prev_hash),
                hash=bytes(digest),
                rendered=rendered,
                id=event_id,
                redacted=redacted,
            )
            for seq, prev_hash, digest, event_id, redacted, rendered in cur
        )
        result = verify_rows(rows, expected_prev)
    first_break = result.first_break
    return {
        "ok": result.ok,
        "events_checked": result.events_checked,
        "from_seq": result.first_seq,
        "to_seq": result.last_seq,
        "head_hash": result.head_hash.hex() if result.head_hash else None,
        "first_break": None
        if first_break is None
        else {"seq": first_break.seq, "id": first_break.id, "reason": first_break.reason},
    }
