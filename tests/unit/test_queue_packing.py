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


def test_batches_respect_entry_count_and_total_size() -> None:
    from auditlog.queue import MAX_BATCH_BYTES, batch_indexes

    sizes = [250 * 1024] * 9 + [100] * 25
    batches = list(batch_indexes(sizes))
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    assert all(len(b) <= 10 for b in batches)
    assert all(sum(sizes[i] for i in b) <= MAX_BATCH_BYTES for b in batches)
    assert len(batches[0]) == 3  # three 250 KiB envelopes fit in 1 MB, a fourth does not
