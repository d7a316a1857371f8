import hashlib
import json

import pytest

from auditlog.chain import GENESIS_HASH, ChainRow, canonical_form, link_hash, verify_rows

FIELDS: list[str | None] = [
    "01890a5d-ac96-774b-bcce-b302099a8057",
    "6f0c5a52-93a1-4a39-9a4e-2f0f0c1d2e3f",
    "2024-05-01T12:00:00.000000Z",
    None,
    None,
    "sess",
    "192.0.2.1",
    None,
    "CREATE",
    "doc",
    "1",
    "INFO",
    None,
    '{"a": 1}',
    None,
]


def chain(n: int) -> list[ChainRow]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        rendered = [*FIELDS[:10], str(seq), *FIELDS[11:]]
        digest = link_hash(prev, rendered, seq)
        rows.append(ChainRow(seq=seq, prev_hash=prev, hash=digest, rendered=rendered, id=f"e{seq}"))
        prev = digest
    return rows


def test_canonical_form_is_sorted_json_of_field_digests() -> None:
    form = json.loads(canonical_form(FIELDS, 7))
    assert list(form) == sorted(form)
    assert form["seq"] == hashlib.sha256(b"7").hexdigest()
    assert form["occurred_at"] is None
    assert form["after_state"] == hashlib.sha256(b'{"a": 1}').hexdigest()


def test_hash_links_to_previous() -> None:
    expected = hashlib.sha256(GENESIS_HASH + canonical_form(FIELDS, 1)).digest()
    assert link_hash(GENESIS_HASH, FIELDS, 1) == expected


def test_intact_chain_verifies() -> None:
    result = verify_rows(chain(5), GENESIS_HASH)
    assert result.ok
    assert result.events_checked == 5
    assert result.head_hash == chain(5)[-1].hash


def test_changed_field_is_named_by_seq() -> None:
    rows = chain(5)
    tampered = list(rows[2].rendered)
    tampered[11] = "CRITICAL"
    rows[2] = ChainRow(rows[2].seq, rows[2].prev_hash, rows[2].hash, tampered, rows[2].id)
    result = verify_rows(rows, GENESIS_HASH)
    assert not result.ok
    assert result.first_break is not None
    assert (result.first_break.seq, result.first_break.id) == (3, "e3")
    assert result.events_checked == 2


def test_removed_event_is_a_gap() -> None:
    rows = chain(4)
    del rows[1]
    result = verify_rows(rows, GENESIS_HASH)
    assert result.first_break is not None
    assert result.first_break.seq == 3
    assert "seq jumps" in result.first_break.reason


def test_range_verification_without_known_predecessor() -> None:
    result = verify_rows(chain(6)[3:], expected_prev=None)
    assert result.ok
    assert (result.first_seq, result.last_seq) == (4, 6)


def _reference_canonical_form(
    rendered: list[str | None], seq: int, redacted: dict[str, str] | None = None
) -> bytes:
    """The definition, spelled the slow way (docs/integrity.md)."""
    from auditlog.chain import CANONICAL_FIELDS, field_digest

    digests = {
        name: field_digest(value)
        for name, value in zip(CANONICAL_FIELDS, [*rendered, str(seq)], strict=True)
    }
    digests.update(redacted or {})
    return json.dumps(digests, sort_keys=True, separators=(",", ":")).encode("ascii")


@pytest.mark.parametrize("seed", range(20))
def test_template_spelling_equals_the_sorted_json_definition(seed: int) -> None:
    import random

    rng = random.Random(seed)
    rendered: list[str | None] = [
        None if rng.random() < 0.3 else "".join(rng.choice('ab"\\\\é€\\n{}') for _ in range(9))
        for _ in FIELDS
    ]
    redacted = {"ip_address": "ab" * 32, "metadata": "cd" * 32} if seed % 2 else None
    seq = rng.randrange(1, 10**12)
    assert canonical_form(rendered, seq, redacted) == _reference_canonical_form(
        rendered, seq, redacted
    )
