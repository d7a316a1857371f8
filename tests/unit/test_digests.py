"""Digest documents, keys and the offline verifier on a synthetic chain (no services)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditlog.chain import GENESIS_HASH, link_hash
from auditlog.digests import (
    GENESIS_DIGEST_HASH,
    Digest,
    DigestKeyError,
    key_id,
    load_public_key,
    load_signing_key,
    public_key_pem,
    sign,
    signature_valid,
)
from auditlog.offline_verify import DigestFile, ExportedEvent, jsonb_text, verify_offline

TENANT = uuid.UUID("11111111-2222-4333-8444-555555555555")


def test_signing_key_from_base64_seed_or_pem_is_the_same_key() -> None:
    seed = os.urandom(32)
    from_seed = load_signing_key(base64.b64encode(seed).decode())
    pem = from_seed.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    assert key_id(load_signing_key(pem).public_key()) == key_id(from_seed.public_key())
    public = from_seed.public_key()
    assert key_id(load_public_key("# a comment\n" + public_key_pem(public))) == key_id(public)


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "not set"), ("not base64!", "neither PEM nor base64"), ("AAAA", "3 bytes, not 32")],
)
def test_a_bad_signing_key_is_named(value: str, message: str) -> None:
    with pytest.raises(DigestKeyError, match=message):
        load_signing_key(value)


def test_jsonb_text_orders_keys_like_jsonb_and_prints_numbers_positionally() -> None:
    value = {"bb": [1, 1e-07, 2.5], "a": {"é": None, "z": True}, "c": "x\ny"}
    assert (
        jsonb_text(value)
        == '{"a": {"z": true, "é": null}, "c": "x\\ny", "bb": [1, 0.0000001, 2.5]}'
    )


def chain(n: int) -> list[ExportedEvent]:
    events, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        rendered: list[str | None] = [f"id-{seq}", str(TENANT), *["x"] * 13]
        digest = link_hash(prev, rendered, seq)
        events.append(
            ExportedEvent(str(TENANT), seq, f"id-{seq}", prev, digest, rendered, None, f"f:{seq}")
        )
        prev = digest
    return events


def digests_for(
    events: list[ExportedEvent], ranges: list[tuple[int, int]], key: Ed25519PrivateKey
) -> list[DigestFile]:
    files, prev = [], GENESIS_DIGEST_HASH
    for number, (first, last) in enumerate(ranges):
        digest = Digest(
            TENANT,
            date(2026, 1, number + 1),
            first,
            last,
            last - first + 1,
            events[last - 1].hash,
            prev,
            key_id(key.public_key()),
        )
        signed = sign(digest, key)
        files.append(DigestFile(digest.fields(), signed.signature, f"d{number}.json"))
        prev = digest.digest_hash()
    return files


def test_a_clean_range_verifies_and_each_kind_of_tampering_is_named() -> None:
    key = Ed25519PrivateKey.generate()
    keys = {key_id(key.public_key()): key.public_key()}
    events = chain(9)
    digests = digests_for(events, [(1, 3), (4, 6), (7, 9)], key)
    assert signature_valid(digests[0].fields, digests[0].signature, key.public_key())
    report = verify_offline(events, digests, keys)
    assert (report.ok, report.events_checked, report.digests_fully_covered) == (True, 9, 3)

    altered = list(events)
    fake = events[4]
    altered[4] = ExportedEvent(
        fake.tenant_id,
        5,
        fake.id,
        fake.prev_hash,
        fake.hash,
        ["forged", *fake.rendered[1:]],
        None,
        "f:5",
    )
    report = verify_offline(altered, digests, keys)
    assert [(p.kind, p.seq, p.file) for p in report.problems] == [("event", 5, "f:5")]

    report = verify_offline(events, [digests[0], digests[2]], keys)
    assert [(p.kind, p.file) for p in report.problems] == [("digest", "d2.json")]

    edited = DigestFile({**digests[1].fields, "count": 2}, digests[1].signature, "d1.json")
    report = verify_offline(events, [digests[0], edited, digests[2]], keys)
    assert ("digest", "d1.json") in [(p.kind, p.file) for p in report.problems]

    stranger = Ed25519PrivateKey.generate()
    report = verify_offline(events, digests, {key_id(stranger.public_key()): stranger.public_key()})
    assert {p.file for p in report.problems} == {"d0.json", "d1.json", "d2.json"}
