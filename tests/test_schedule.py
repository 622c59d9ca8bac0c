"""The adaptive poll schedule: quick cold start, lag a small share of the run, back-off."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentrun._schedule import PollSchedule


def test_cold_schedule_starts_soon_and_backs_off() -> None:
    """Without history: a first poll after `cold_first`, then half the elapsed time, capped."""
    s = PollSchedule(max_interval=2.0, cold_first=0.3)
    assert s.delay(0.0) == pytest.approx(0.3)
    assert s.delay(0.3) == pytest.approx(0.15)
    assert s.delay(2.0) == pytest.approx(1.0)
    assert s.delay(1000.0) == 2.0


def test_learned_schedule_sleeps_to_earliest_then_polls_finely() -> None:
    """After seeing ~1 s runs: sleep to ~1 s, then poll every 8% of the median."""
    s = PollSchedule()
    for d in (0.95, 1.0, 1.05, 1.0, 0.98):
        s.record(d)
    assert s.delay(0.0) == pytest.approx(0.95)
    assert s.delay(0.96) == pytest.approx(0.08)
    # Far past anything seen: back off, keeping the lag near 10% of the time taken so far.
    assert s.delay(10.0) == pytest.approx(1.0)
    assert s.delay(100.0) == pytest.approx(2.0)


def test_one_finished_run_is_enough_to_learn() -> None:
    """After a single run, the next one is polled around that run's duration."""
    s = PollSchedule()
    s.record(2.0)
    assert s.delay(0.0) == pytest.approx(2.0)
    assert s.delay(2.0) == pytest.approx(0.16)


def test_invalid_settings_are_refused() -> None:
    """Nonsensical parameters raise immediately."""
    with pytest.raises(ValueError, match="lag_fraction"):
        PollSchedule(lag_fraction=0)
    with pytest.raises(ValueError, match="min_interval"):
        PollSchedule(min_interval=3, max_interval=1)


@given(
    durations=st.lists(st.floats(min_value=0.01, max_value=120), min_size=3, max_size=80),
    elapsed=st.floats(min_value=0, max_value=600),
)
def test_delay_is_always_bounded(durations: list[float], elapsed: float) -> None:
    """Whatever was learned, a delay is positive and the poll interval near the typical end
    keeps the lag under 10% of the median run (or the minimum interval)."""
    s = PollSchedule()
    for d in durations:
        s.record(d)
    delay = s.delay(elapsed)
    assert delay > 0
    sorted_d = sorted(durations)
    median = (sorted_d[(len(sorted_d) - 1) // 2] + sorted_d[len(sorted_d) // 2]) / 2
    if sorted_d[0] <= elapsed <= sorted_d[-1]:
        assert delay <= max(0.1 * median, 0.02) + 1e-9


def test_record_reports_material_changes() -> None:
    """record() says when sleeping runs should re-plan: first learning, or a big shift."""
    s = PollSchedule()
    assert s.record(1.0) is True  # first thing learned
    assert s.record(1.05) is False  # the typical duration barely moved
    assert s.record(5.0) is False  # median of 1.0, 1.05, 5.0 is 1.05
    assert s.record(6.0) is True  # median jumps from 1.05 to 3.025
    assert s.record(-1.0) is False
