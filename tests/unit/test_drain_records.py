"""Pure helpers of the drain."""


def test_partitions_are_made_per_run_of_consecutive_days_not_for_the_span() -> None:
    from datetime import date

    from auditlog.drain import _day_runs

    days = [date(2021, 3, 1), date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 29)]
    assert _day_runs(days) == [
        (date(2021, 3, 1), date(2021, 3, 1)),
        (date(2026, 11, 26), date(2026, 11, 27)),
        (date(2026, 11, 29), date(2026, 11, 29)),
    ]
    assert _day_runs([]) == []
