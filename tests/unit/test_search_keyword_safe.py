"""auditlog.search.keyword_safe: JSON values cut to what one keyword term can hold."""

from __future__ import annotations

from auditlog.search import KEYWORD_KEY_MAX_BYTES, KEYWORD_VALUE_MAX_BYTES, keyword_safe


def test_short_values_are_kept_as_they_are() -> None:
    value = {"a": "é" * 100, "n": 5, "b": [True, None, "x"], "c": {"d": 1.5}}
    assert keyword_safe(value) == value


def test_long_strings_and_keys_are_cut_at_whole_characters() -> None:
    long_key = "κ" * 1_000  # 2,000 bytes
    cut = keyword_safe({"s": "é" * 20_000, long_key: ["€" * 10_000, 7]})
    value = cut["s"]
    assert len(value.encode()) <= KEYWORD_VALUE_MAX_BYTES
    assert value == "é" * (KEYWORD_VALUE_MAX_BYTES // 2)
    (key,) = [k for k in cut if k != "s"]
    assert len(key.encode()) <= KEYWORD_KEY_MAX_BYTES
    assert key == "κ" * (KEYWORD_KEY_MAX_BYTES // 2)
    euros, seven = cut[key]
    assert euros == "€" * (KEYWORD_VALUE_MAX_BYTES // 3)  # 3 bytes each: no half character
    assert seven == 7


def test_a_path_of_cut_keys_and_a_cut_value_fits_in_one_term() -> None:
    from auditlog.events import MAX_JSON_DEPTH

    longest = MAX_JSON_DEPTH * (KEYWORD_KEY_MAX_BYTES + 1) + KEYWORD_VALUE_MAX_BYTES
    assert longest <= 32_766
