import base64
import json
import os
import zlib

import pytest

from auditlog.queue import (
    BadEnvelope,
    compressed_envelope,
    decode_envelope,
    encode_envelope,
    pack_records,
)


def test_plain_records_are_packed_under_the_size_limit_in_order() -> None:
    records = [{"id": str(i), "pad": "x" * 1000} for i in range(500)]
    bodies = list(pack_records(records, max_bytes=50_000, compress=False))
    assert all(len(b.encode()) <= 50_000 for b in bodies)
    assert 10 <= len(bodies) <= 12
    assert all(json.loads(b)["v"] == 1 for b in bodies)
    unpacked = [r for body in bodies for r in decode_envelope(body)]
    assert unpacked == records


def _audit_like(i: int) -> dict[str, object]:
    return {
        "id": f"0190f3a2-0000-7000-8000-{i:012d}",
        "action_type": "UPDATE",
        "resource_type": "invoice",
        "resource_id": f"inv-{i % 97}",
        "metadata": {"plan": "pro", "region": "eu-west-1", "seq": i},
    }


def test_compressed_envelopes_carry_more_records_within_the_limit() -> None:
    records = [_audit_like(i) for i in range(3000)]
    plain = list(pack_records(records, max_bytes=20_000, compress=False))
    packed = list(pack_records(records, max_bytes=20_000))
    assert all(len(b) <= 20_000 for b in packed)
    assert all(json.loads(b)["v"] == 2 for b in packed)
    assert len(packed) * 3 <= len(plain)  # at least three times fewer messages
    assert [r for body in packed for r in decode_envelope(body)] == records


def test_incompressible_records_are_split_until_each_envelope_fits() -> None:
    records = [{"id": str(i), "noise": os.urandom(900).hex()} for i in range(200)]
    bodies = list(pack_records(records, max_bytes=30_000))
    assert all(len(b) <= 30_000 for b in bodies)
    assert [r for body in bodies for r in decode_envelope(body)] == records


def test_non_ascii_text_is_escaped_so_sqs_accepts_every_code_point() -> None:
    record = {"id": "a", "metadata": {"note": "caf\u00e9 \uffff \U0001f600"}}
    (body,) = pack_records([record], compress=False)
    assert body.isascii()
    assert decode_envelope(body) == [record]


def test_single_record_round_trips() -> None:
    record = {"id": "a", "metadata": {"ü": [1, 2.5, None]}}
    assert decode_envelope(encode_envelope([record])) == [record]


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"v": 2, "events": [{}]}),
        json.dumps({"v": 1, "events": []}),
        json.dumps([1]),
        '{"v": 1, "events": [{"n": ' + "9" * 5000 + "}]}",  # past int()'s digit limit
    ],
)
def test_bad_envelopes_are_rejected(body: str) -> None:
    with pytest.raises(BadEnvelope):
        decode_envelope(body)


def _v2(payload: bytes) -> str:
    return json.dumps({"v": 2, "deflate": base64.b64encode(payload).decode()})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"v": 2, "deflate": "***"}), "undecodable"),
        (json.dumps({"v": 2, "deflate": 7}), "without a deflate payload"),
        (_v2(b"not zlib"), "undecodable"),
        (_v2(zlib.compress(b'[{"a":1}]')[:-4]), "truncated"),
        (_v2(zlib.compress(b"[" + b" " * (70 * 1024 * 1024) + b"]")), "size limit"),
        (_v2(zlib.compress(b"{not json")), "not JSON"),
        (_v2(zlib.compress(b'[{"n": ' + b"9" * 5000 + b"}]")), "not JSON"),
        (_v2(zlib.compress(b"[]")), "no list of event objects"),
    ],
)
def test_bad_compressed_envelopes_are_rejected(body: str, reason: str) -> None:
    with pytest.raises(BadEnvelope, match=reason):
        decode_envelope(body)


def test_compressed_envelope_round_trips() -> None:
    records = [_audit_like(i) for i in range(3)]
    body = compressed_envelope([json.dumps(r, separators=(",", ":")) for r in records])
    assert decode_envelope(body) == records


def test_batches_respect_entry_count_and_total_size() -> None:
    from auditlog.queue import MAX_BATCH_BYTES, batch_indexes

    sizes = [250 * 1024] * 9 + [100] * 25
    batches = list(batch_indexes(sizes))
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    assert all(len(b) <= 10 for b in batches)
    assert all(sum(sizes[i] for i in b) <= MAX_BATCH_BYTES for b in batches)
    assert len(batches[0]) == 3  # three 250 KiB envelopes fit in 1 MB, a fourth does not


def test_integers_beyond_64_bits_survive_a_compressed_round_trip() -> None:
    record = {"id": "a", "metadata": {"big": 123456789012345678901234567890, "neg": -(2**63) - 1}}
    (body,) = pack_records([record])
    assert decode_envelope(body) == [record]
    assert isinstance(decode_envelope(body)[0]["metadata"]["big"], int)
