"""Result values: nearest-rank percentiles and what a RunResult derives from its history."""

from __future__ import annotations

import math

from agentrun._machine import State, Transition
from agentrun._results import RunResult, percentile, percentiles


def test_nearest_rank_percentiles() -> None:
    """p50 of 1..10 is 5 and p90 is 9 (nearest rank); odd sizes and one value work too."""
    values = [float(v) for v in range(10, 0, -1)]
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.9) == 9.0
    assert percentile([1.0, 2.0], 0.5) == 1.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))
    assert percentiles(values) == {"p50": 5.0, "p90": 9.0, "p99": 10.0, "max": 10.0}
    assert percentiles([]) == {}


def test_result_durations_and_text() -> None:
    """Durations sum the time per state from the history; text joins the messages' text."""
    history = (
        Transition(State.PENDING, 10.0, "start"),
        Transition(State.RUN_QUEUED, 10.5, "run created"),
        Transition(State.IN_PROGRESS, 11.0, "poll: in_progress"),
        Transition(State.COMPLETED, 13.0, "poll: completed"),
    )
    result = RunResult(
        agent_id="asst_x",
        state=State.COMPLETED,
        thread_id="thread_1",
        run_id="run_1",
        messages=(),
        usage=None,
        tool_calls=(),
        history=history,
        mode="poll",
        requests=3,
    )
    assert result.durations == {
        State.PENDING: 0.5,
        State.RUN_QUEUED: 0.5,
        State.IN_PROGRESS: 2.0,
    }
    assert result.elapsed == 3.0
    assert result.text == ""
    assert result.status == "completed"
