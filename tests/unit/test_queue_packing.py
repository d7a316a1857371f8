import json

import pytest

from auditlog.queue import BadEnvelope, decode_envelope, encode_envelope, pack_records


def test_records_are_packed_under_the_size_limit_in_order() -> None:
    records = [{"id": str(i), "pad": "x" * 1000} for i in range(500)]
    bodies = list(pack_records(records, max_bytes=50_000))
    assert all(len(b.encode()) <= 50_000 for b in bodies)
    assert 10 <= len(bodies) <= 12
    unpacked = [r for body in bodies for r in decode_envelope(body)]
    assert unpacked == records


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
    ],
)
def test_bad_envelopes_are_rejected(body: str) -> None:
    with pytest.raises(BadEnvelope):
        decode_envelope(body)
