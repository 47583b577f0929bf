"""The published date-time patterns accept every real date in their year range and nothing else.

The events API once refused every timestamp on the 29th-31st of a month (the pattern stopped at day 28),
which the 30-day soak (benchmarks/months.py) found as 422s on real traffic.
"""

from __future__ import annotations

import datetime
import re

import pytest
from pydantic import ValidationError

from recsys.serving.catalog.feed import CREATED_PATTERN
from recsys.serving.http.schemas import TIMESTAMP_PATTERN, InteractionEvent


def _real(y: int, m: int, d: int) -> bool:
    try:
        datetime.date(y, m, d)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("pattern", "years"), [(TIMESTAMP_PATTERN, range(2000, 2100)),
                                                (CREATED_PATTERN, range(1800, 2200))])
def test_pattern_matches_exactly_the_real_dates(pattern: str, years: range) -> None:
    compiled = re.compile(pattern)
    wrong = [f"{y:04d}-{m:02d}-{d:02d}" for y in years for m in range(1, 13) for d in range(1, 32)
             if bool(compiled.match(f"{y:04d}-{m:02d}-{d:02d}T12:00:00Z")) != _real(y, m, d)]
    assert wrong == []
    assert not compiled.match(f"{years.start - 1:04d}-01-01T00:00:00Z")
    assert not compiled.match(f"{years.stop:04d}-01-01T00:00:00Z")


@pytest.mark.parametrize("ts", ["2026-01-31T23:59:59Z", "2026-12-30T08:00:00+01:00", "2024-02-29T00:00:00Z"])
def test_events_on_the_last_days_of_a_month_are_accepted(ts: str) -> None:
    assert InteractionEvent(user_id=1, item_id=2, event_type="click", timestamp=ts).timestamp == ts


@pytest.mark.parametrize("ts", ["2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-02-30T00:00:00Z"])
def test_impossible_dates_are_refused_naming_the_field(ts: str) -> None:
    with pytest.raises(ValidationError) as info:
        InteractionEvent(user_id=1, item_id=2, event_type="click", timestamp=ts)
    assert info.value.errors()[0]["loc"] == ("timestamp",)
