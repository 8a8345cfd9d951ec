"""Tests of retrieval.dates: the forms a filter date takes, the instant each starts at, and the refusals."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from retrieval.dates import DATE_FORMS, DateRange, epoch_ns, parse_date
from retrieval.errors import InvalidDateError, InvalidQueryError


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("2021", datetime(2021, 1, 1)),
        ("2021-06", datetime(2021, 6, 1)),
        ("2021-6", datetime(2021, 6, 1)),
        ("2021-06-15", datetime(2021, 6, 15)),
        (" 2021-06-15 ", datetime(2021, 6, 15)),
        ("2021-06-15T14:30", datetime(2021, 6, 15, 14, 30)),
        ("2021-06-15 14:30:05", datetime(2021, 6, 15, 14, 30, 5)),
        ("2021-06-15T14:30:05.250000", datetime(2021, 6, 15, 14, 30, 5, 250000)),
    ],
)
def test_each_form_starts_its_period(text: str, start: datetime) -> None:
    assert parse_date(text, "after") == start


def test_dates_and_datetimes_are_taken_as_given() -> None:
    assert parse_date(date(2020, 2, 29), "before") == datetime(2020, 2, 29)
    assert parse_date(datetime(2020, 2, 29, 8), "before") == datetime(2020, 2, 29, 8)


def test_a_zoned_time_is_read_in_local_time() -> None:
    """`Z` and offsets name an instant; filters compare local times, so it becomes this machine's local time."""
    instant = datetime(2021, 6, 15, 12, 0, tzinfo=timezone.utc)
    local = instant.astimezone().replace(tzinfo=None)
    assert parse_date("2021-06-15T12:00Z", "after") == local
    assert parse_date("2021-06-15T14:00+02:00", "after") == local
    assert parse_date(instant, "after") == local


@pytest.mark.parametrize(
    "text", ["", "21", "2021-13", "2021-02-30", "2021/06/15", "June 2021", "2021-06-15T25:00", "x"]
)
def test_bad_dates_are_refused_naming_the_parameter_and_the_forms(text: str) -> None:
    with pytest.raises(InvalidDateError) as caught:
        parse_date(text, "before")
    assert caught.value.parameters == ("before",)
    assert "`before`" in str(caught.value) and DATE_FORMS in str(caught.value)
    assert isinstance(caught.value, InvalidQueryError)


def test_a_range_starts_at_after_and_ends_before_before() -> None:
    """`after` 2021 keeps 2021-01-01 00:00 on; `before` 2021-06 stops before 2021-06-01 00:00."""
    assert DateRange.of("2021", "2021-06") == DateRange(datetime(2021, 1, 1), datetime(2021, 6, 1))
    assert DateRange.of(None, "2021") == DateRange(None, datetime(2021, 1, 1))
    assert DateRange.of("2021-06-15", None) == DateRange(datetime(2021, 6, 15), None)


@pytest.mark.parametrize(("after", "before"), [("2021", "2021"), ("2022", "2021-06"), ("2021-06-15", "2021-06-14")])
def test_a_range_no_date_can_be_in_is_refused(after: str, before: str) -> None:
    with pytest.raises(InvalidDateError, match=r"`after`.*is not before `before`") as caught:
        DateRange.of(after, before)
    assert caught.value.parameters == ("after", "before")


def test_epoch_ns_is_the_mtime_of_that_local_moment() -> None:
    moment = datetime(2021, 6, 15, 14, 30, 5, 250000)
    assert epoch_ns(moment) == round(moment.timestamp() * 1e6) * 1000
    assert epoch_ns(moment + timedelta(microseconds=1)) - epoch_ns(moment) == 1000
    assert epoch_ns(datetime(1970, 1, 1, tzinfo=timezone.utc).astimezone().replace(tzinfo=None)) == 0
    assert epoch_ns(datetime(9999, 12, 31)) > epoch_ns(datetime(2100, 1, 1))
