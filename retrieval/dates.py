"""Dates as people type them for a filter (`2021`, `2021-06`, `2021-06-15`, an ISO date and time), read as
the instant the period named starts, in local time: `after=2021` keeps what was taken from 2021-01-01
00:00 on, `before=2021-06` what was taken before 2021-06-01 00:00. The CLI, the Python API and the web API
share this one reading.

An image's date is its EXIF date taken (the camera's clock, a local time without zone), else the file's
modification time read in this computer's time zone (`epoch_ns` turns a bound into the mtime's scale).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from retrieval.errors import InvalidDateError

DATE_FORMS = "2021, 2021-06, 2021-06-15 or an ISO date and time such as 2021-06-15T14:30"
"""The accepted forms, as error messages and help texts name them."""
_PERIOD = re.compile(r"(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?")
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


def parse_date(value: str | date | datetime, parameter: str) -> datetime:
    """The local, naive instant `value` starts at: a year, a month, a day (a string or a `date`), or a date
    and time (an ISO string or a `datetime`; one with a zone is converted to local time). Anything else is
    an `InvalidDateError` naming `parameter` and the accepted forms."""
    if isinstance(value, datetime):
        return _local(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = str(value).strip()
    try:
        period = _PERIOD.fullmatch(text)
        if period:
            year, month, day = (int(part) if part else 1 for part in period.groups())
            return datetime(year, month, day)
        if "T" in text or " " in text:
            return _local(datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text))
    except ValueError as exc:
        raise _invalid(value, parameter, f" ({exc})") from exc
    raise _invalid(value, parameter, "")


def _invalid(value: object, parameter: str, why: str) -> InvalidDateError:
    return InvalidDateError(
        f"`{parameter}` is {str(value)!r}, which is not a date{why}: give {DATE_FORMS}", parameters=(parameter,)
    )


def _local(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone().replace(tzinfo=None)


def epoch_ns(moment: datetime) -> int:
    """The local, naive `moment` as nanoseconds since the epoch, the scale of a file's mtime (clamped to
    int64 where the platform cannot place a far date)."""
    try:
        seconds = int(moment.replace(microsecond=0).timestamp())
    except (OverflowError, OSError, ValueError):
        return _NS_MIN if moment.year < 1970 else _NS_MAX
    return max(_NS_MIN, min(_NS_MAX, seconds * 1_000_000_000 + moment.microsecond * 1000))


@dataclass(frozen=True)
class DateRange:
    """`start <= date < end`, either bound open (None)."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(cls, after: str | date | datetime | None, before: str | date | datetime | None) -> DateRange:
        """The range `after` and `before` name (see the module); `after` not before `before` is refused, as
        no image could pass."""
        start = None if after is None else parse_date(after, "after")
        end = None if before is None else parse_date(before, "before")
        if start is not None and end is not None and start >= end:
            raise InvalidDateError(
                f"`after` ({start:%Y-%m-%d %H:%M}) is not before `before` ({end:%Y-%m-%d %H:%M}): no date can be "
                "both; `after` includes the moment it names and `before` excludes it",
                parameters=("after", "before"),
            )
        return cls(start, end)
