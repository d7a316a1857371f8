"""loads_fast (the C decoder on the request and drain paths) must read every body exactly
as json.loads does, or step aside so that the stdlib decides."""

from __future__ import annotations

import json

import pytest

from auditlog.events import loads_fast

SAME = [
    b'{"a": 1, "b": [1.5, -2e-3, true, false, null], "c": {"d": "\\u00e9\\ud83d\\ude00"}}',
    b'{"k": 1, "k": 2}',  # duplicate keys: the last wins in both
    '{"t": "héllo ☃ 😀"}'.encode(),
    b"[922337203685477580, -922337203685477580, 123456789012345678]",  # 18 digits
    b'"\\u0000 nul is a valid JSON string"',
    b"0.1",
    b"1e308",
]
STEP_ASIDE = [
    b"123456789012345678901",  # beyond 64 bits: orjson would read a float
    b"[9223372036854775807]",  # any 19-digit run steps aside (cheap, and safe)
    b'{"n": 99999999999999999999}',
    b'{"x": NaN}',  # the stdlib accepts NaN; orjson does not
    b'"\\ud800"',  # a lone surrogate escape
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    b'{"a": "\xff"}',  # invalid UTF-8
    b"[" * 2000 + b"]" * 2000,  # deeper than orjson's limit
    b'{"a": 1,}',  # malformed for both
]


@pytest.mark.parametrize("raw", SAME)
def test_reads_like_the_stdlib(raw: bytes) -> None:
    parsed, value = loads_fast(raw)
    assert parsed
    expected = json.loads(raw)
    assert value == expected
    assert json.dumps(value) == json.dumps(expected)  # same types (int vs float) too


@pytest.mark.parametrize("raw", STEP_ASIDE)
def test_hard_cases_go_to_the_stdlib(raw: bytes) -> None:
    assert loads_fast(raw) == (False, None)


def test_big_integers_stay_exact_through_the_fallback() -> None:
    raw = b'{"n": 12345678901234567890123}'
    assert loads_fast(raw)[0] is False
    assert json.loads(raw)["n"] == 12345678901234567890123
