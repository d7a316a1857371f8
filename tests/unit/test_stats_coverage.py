"""How a range is split into built days, spans counted and spans subtracted (pure logic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from auditlog.stats import BuiltDay, coverage

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def t(d: date, hour: int, minute: int = 0) -> datetime:
    return datetime(d.year, d.month, d.day, hour, minute, tzinfo=UTC)


def test_whole_days_are_used_and_the_rest_counted() -> None:
    built = {D2: BuiltDay(D2, 100)}
    cov = coverage(t(D1, 20), t(D3, 4), built)
    assert cov.day_list == [D2]
    assert cov.rest == [(t(D1, 20), t(D2, 0)), (t(D3, 0), t(D3, 4))]
    assert cov.minus == []


def test_a_day_mostly_covered_is_used_minus_its_outside_by_time_without_hourly_totals() -> None:
    built = {D1: BuiltDay(D1, 100), D2: BuiltDay(D2, 100)}
    cov = coverage(t(D1, 3, 30), t(D2, 20), built)
    assert cov.day_list == [D1, D2]
    assert cov.rest == []
    assert cov.minus == [(t(D1, 0), t(D1, 3, 30)), (t(D2, 20), t(D3, 0))]
    assert cov.raw() == [(t(D1, 0), t(D1, 3, 30), -1), (t(D2, 20), t(D3, 0), -1)]
    assert cov.hours_and_raw() == (
        [(t(D1, 0), t(D1, 3), -1), (t(D2, 20), t(D3, 0), -1)],
        [(t(D1, 3), t(D1, 3, 30), -1)],
    )


def test_hourly_totals_decide_which_side_holds_fewer_events() -> None:
    # Events only from 15:00 on: a range from 09:00 covers 15 hours of the day but all its
    # events; the 9 hours before hold none, so the day minus them reads no row.
    quiet_morning = BuiltDay(D1, 90, tuple([0] * 15 + [10] * 9))
    cov = coverage(t(D1, 9), t(D2, 0), {D1: quiet_morning})
    assert cov.day_list == [D1]
    assert cov.minus == [(t(D1, 0), t(D1, 9))]
    # Events only before 03:00: a range from 02:00 covers 22 hours but few of the events.
    busy_night = BuiltDay(D1, 300, tuple([100] * 3 + [0] * 21))
    cov = coverage(t(D1, 2), t(D2, 0), {D1: busy_night})
    assert cov.day_list == []
    assert cov.rest == [(t(D1, 2), t(D2, 0))]
    # A range inside one day: both ends are subtracted when they hold fewer events.
    cov = coverage(t(D1, 1, 15), t(D1, 23, 40), {D1: BuiltDay(D1, 240, tuple([10] * 24))})
    assert cov.day_list == [D1]
    assert cov.minus == [(t(D1, 0), t(D1, 1, 15)), (t(D1, 23, 40), t(D2, 0))]


def test_an_offset_range_is_split_on_utc_days() -> None:
    ist = t(D1, 9).astimezone(timezone(timedelta(hours=5, minutes=30)))  # 14:30 there
    cov = coverage(ist, t(D2, 13), {D1: BuiltDay(D1, 24), D2: BuiltDay(D2, 24)})
    assert cov.day_list == [D1, D2]
    assert cov.minus == [(t(D1, 0), ist), (t(D2, 13), t(D3, 0))]
    assert cov.hours_and_raw()[1] == []  # 09:00 UTC: whole hours only
    # Half a day each side is not fewer: counted from the rows.
    cov = coverage(ist, t(D2, 12), {D1: BuiltDay(D1, 24), D2: BuiltDay(D2, 24)})
    assert cov.day_list == [D1]
    assert cov.rest == [(t(D2, 0), t(D2, 12))]
