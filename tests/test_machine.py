"""The pure run state machine: table invariants, each driver path, and property tests."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrun._errors import LocalProtocolError, RemoteProtocolError
from agentrun._machine import (
    ACTIVE_STATES,
    STATUS_TO_STATE,
    TERMINAL_STATES,
    TRANSITIONS,
    Finish,
    Op,
    ReadStream,
    RunMachine,
    Send,
    Sleep,
    State,
    mermaid_diagram,
)

S = State
DOC = Path(__file__).resolve().parent.parent / "docs" / "state-machine.md"


def _poll(status: str, m: RunMachine, now: float, via: str = "poll") -> object:
    return m.run_update(status, run_id="run_1", thread_id="thread_1", now=now, via=via)  # type: ignore[arg-type]


def test_diagram_in_docs_matches_table() -> None:
    """docs/state-machine.md holds exactly the diagram generated from TRANSITIONS."""
    text = DOC.read_text()
    match = re.search(
        r"<!-- BEGIN GENERATED DIAGRAM -->\n(.*)<!-- END GENERATED DIAGRAM -->", text, re.S
    )
    assert match is not None, "generated block missing from docs/state-machine.md"
    assert match.group(1) == mermaid_diagram()


def test_no_move_leaves_a_terminal_state() -> None:
    """Terminal states are absorbing: the table has no edge out of them."""
    for src, _dst in TRANSITIONS:
        assert src not in TERMINAL_STATES


def test_every_state_can_reach_an_end() -> None:
    """From every state some path leads to a terminal state (no dead ends)."""
    for start in State:
        seen = {start}
        frontier = [start]
        while frontier:
            cur = frontier.pop()
            for src, dst in TRANSITIONS:
                if src is cur and dst not in seen:
                    seen.add(dst)
                    frontier.append(dst)
        assert seen & TERMINAL_STATES, start


def test_every_service_status_maps_to_a_state() -> None:
    """All nine run statuses of the API have a state; active ones are ACTIVE_STATES."""
    assert set(STATUS_TO_STATE) == {
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "cancelled",
        "failed",
        "completed",
        "expired",
        "incomplete",
    }
    active = {STATUS_TO_STATE[s] for s in ("queued", "in_progress", "requires_action")}
    assert active < ACTIVE_STATES


def test_poll_path_new_thread() -> None:
    """Poll mode: create, sleep, poll until completed, list messages, finish; timings kept."""
    m = RunMachine(mode="poll", now=0.0, poll_delay=lambda elapsed: 0.5)
    assert m.start(0.0) == Send(Op.CREATE_THREAD_AND_RUN, stream=False)
    assert _poll("queued", m, 0.1, "response") == Sleep(0.6)
    assert m.timer(0.6) == Send(Op.GET_RUN)
    action = _poll("in_progress", m, 0.61)
    assert isinstance(action, Sleep) and action.until == pytest.approx(1.11)
    assert m.timer(1.11) == Send(Op.GET_RUN)
    assert _poll("completed", m, 1.2) == Send(Op.LIST_MESSAGES)
    assert m.messages_fetched(1.25) == Finish(S.COMPLETED)
    assert [t.state for t in m.history] == [S.PENDING, S.RUN_QUEUED, S.IN_PROGRESS, S.COMPLETED]
    d = m.durations()
    assert d[S.PENDING] == pytest.approx(0.1)
    assert d[S.RUN_QUEUED] == pytest.approx(0.51)
    assert d[S.IN_PROGRESS] == pytest.approx(0.59)
    assert m.thread_id == "thread_1" and m.run_id == "run_1"


def test_poll_path_failed_lists_the_partial_reply() -> None:
    """A failed run may have written part of its reply before failing: a polled one lists
    its messages (as a streamed one sees them), then finishes failed."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    _poll("queued", m, 0.1, "response")
    assert _poll("failed", m, 0.5) == Send(Op.LIST_MESSAGES)
    assert m.messages_fetched(0.6).state is S.FAILED
    assert m.finished


def test_continue_thread_uses_create_run() -> None:
    """With a thread id the first request is create-run on that thread."""
    m = RunMachine(mode="stream", now=0.0, thread_id="thread_1")
    assert m.start(0.0) == Send(Op.CREATE_RUN, stream=True)


def test_submit_tool_outputs_path() -> None:
    """With a run id the invocation starts in requires_action and submits tool outputs."""
    m = RunMachine(mode="poll", now=0.0, thread_id="thread_1", run_id="run_1")
    assert m.state is S.REQUIRES_ACTION
    assert m.start(0.0) == Send(Op.SUBMIT_TOOL_OUTPUTS, stream=False)
    assert isinstance(_poll("queued", m, 0.1, "response"), Sleep)
    assert _poll("completed", m, 0.5) == Send(Op.LIST_MESSAGES)


def test_stream_path_reads_until_done() -> None:
    """Stream mode: events move the state, the stream is read to `done`, then finish."""
    m = RunMachine(mode="stream", now=0.0)
    assert m.start(0.0) == Send(Op.CREATE_THREAD_AND_RUN, stream=True)
    assert m.thread_created("thread_1", 0.01) == ReadStream()
    assert _poll("queued", m, 0.02, "stream") == ReadStream()
    assert _poll("in_progress", m, 0.05, "stream") == ReadStream()
    assert _poll("completed", m, 0.5, "stream") == ReadStream()
    assert m.stream_done(0.51) == Finish(S.COMPLETED)
    assert [t.state for t in m.history] == [
        S.PENDING,
        S.THREAD_CREATED,
        S.RUN_QUEUED,
        S.IN_PROGRESS,
        S.COMPLETED,
    ]


def test_stream_requires_action_returns_to_caller() -> None:
    """A tool call ends the stream in requires_action; the invocation finishes there."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    _poll("queued", m, 0.01, "stream")
    _poll("requires_action", m, 0.2, "stream")
    assert m.stream_done(0.21) == Finish(S.REQUIRES_ACTION)


def test_broken_stream_is_finished_by_polling_the_same_run() -> None:
    """A stream cut after the run exists switches to polling that run, then lists messages."""
    m = RunMachine(mode="stream", now=0.0, poll_delay=lambda e: 0.1)
    m.start(0.0)
    _poll("in_progress", m, 0.05, "stream")
    assert m.stream_lost(0.1) == Send(Op.GET_RUN)
    action = _poll("in_progress", m, 0.12)
    assert isinstance(action, Sleep) and action.until == pytest.approx(0.22)
    assert m.timer(0.22) == Send(Op.GET_RUN)
    assert _poll("completed", m, 0.3) == Send(Op.LIST_MESSAGES)
    assert m.messages_fetched(0.31) == Finish(S.COMPLETED)


def test_stream_ending_without_done_is_treated_as_lost() -> None:
    """A body that ends while the run is active is a broken stream, not a success."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    _poll("queued", m, 0.01, "stream")
    assert m.stream_done(0.02) == Send(Op.GET_RUN)


def test_stream_lost_before_run_id_looks_up_the_thread() -> None:
    """Cut after thread.created but before the run id: find the run, never create another."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    m.thread_created("thread_1", 0.01)
    assert m.stream_lost(0.02) == Send(Op.FIND_RUN)


def test_stream_lost_with_nothing_known_finishes_unresolved() -> None:
    """Cut before any event: the machine finishes in a non-terminal state for the driver."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    action = m.stream_lost(0.01)
    assert action == Finish(S.PENDING)


def test_cancel_active_run_sends_cancel_then_polls_to_cancelled() -> None:
    """A local cancel of a live run: cancel request, then poll until cancelled."""
    m = RunMachine(mode="stream", now=0.0, poll_delay=lambda e: 0.05)
    m.start(0.0)
    _poll("in_progress", m, 0.1, "stream")
    assert m.cancel(0.2) == Send(Op.CANCEL_RUN)
    assert m.state is S.CANCELLING
    assert isinstance(_poll("cancelling", m, 0.21, "response"), Sleep)
    assert _poll("cancelled", m, 0.3) == Finish(S.CANCELLED)
    assert m.cancel_reason == "cancel"


def test_cancel_requires_action_run() -> None:
    """A run waiting for tool outputs can be cancelled; it does not finish at requires_action."""
    m = RunMachine(mode="poll", now=0.0, thread_id="thread_1", run_id="run_1")
    m.start(0.0)
    assert m.cancel(0.1, reason="deadline") == Send(Op.CANCEL_RUN)
    assert isinstance(_poll("cancelling", m, 0.2, "response"), Sleep)
    assert m.cancel_reason == "deadline"


def test_cancel_before_run_exists_is_local() -> None:
    """Nothing on the service yet: the cancel is recorded locally, no request."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    assert m.cancel(0.01) == Finish(S.CANCELLED)


def test_cancel_racing_completion_accepts_the_completion() -> None:
    """A run that completes while being cancelled ends completed."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    _poll("in_progress", m, 0.1, "response")
    m.cancel(0.2)
    assert _poll("completed", m, 0.3, "response") == Send(Op.LIST_MESSAGES)


def test_terminal_then_active_is_a_remote_protocol_error() -> None:
    """The service reporting in_progress after completed is impossible."""
    m = RunMachine(mode="stream", now=0.0)
    m.start(0.0)
    _poll("completed", m, 0.1, "stream")
    with pytest.raises(RemoteProtocolError, match="completed -> in_progress"):
        _poll("in_progress", m, 0.2, "stream")


def test_unknown_status_and_changed_ids_are_remote_errors() -> None:
    """Unknown statuses, another run id or another thread id are rejected as remote errors."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    with pytest.raises(RemoteProtocolError, match="unknown run status"):
        _poll("thinking", m, 0.1)
    _poll("queued", m, 0.1)
    with pytest.raises(RemoteProtocolError, match="run_2"):
        m.run_update("queued", run_id="run_2", thread_id="thread_1", now=0.2, via="poll")
    with pytest.raises(RemoteProtocolError, match="thread_2"):
        m.run_update("queued", run_id="run_1", thread_id="thread_2", now=0.2, via="poll")


def test_local_misuse_is_a_local_protocol_error() -> None:
    """Starting twice, polling without a run, or any input after finishing is local misuse."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    with pytest.raises(LocalProtocolError):
        m.start(0.0)
    with pytest.raises(LocalProtocolError):
        m.timer(0.1)
    _poll("cancelled", m, 0.2, "response")
    with pytest.raises(LocalProtocolError, match="already finished"):
        _poll("failed", m, 0.3)
    with pytest.raises(LocalProtocolError):
        RunMachine(mode="poll", now=0.0, run_id="run_1")


STATUSES = sorted(STATUS_TO_STATE)


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(["stream", "poll"]),
    statuses=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=12),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=12, max_size=12),
)
def test_any_status_sequence_is_accepted_or_rejected_per_table(
    mode: str, statuses: list[str], gaps: list[float]
) -> None:
    """For any sequence of service statuses, each move is taken iff the table allows it.

    History stays time-ordered, only starts at `pending`, and only ever grows by legal moves;
    an illegal status raises RemoteProtocolError and nothing else.
    """
    m = RunMachine(mode=mode, now=0.0)  # type: ignore[arg-type]
    m.start(0.0)
    now = 0.0
    for status, gap in zip(statuses, gaps, strict=False):
        now += gap
        if m.finished:
            with pytest.raises(LocalProtocolError):
                _poll(status, m, now)
            break
        before = m.state
        target = STATUS_TO_STATE[status]
        # The first run object always counts as "created" (run_queued) first.
        via_state = S.RUN_QUEUED if before is S.PENDING else before
        legal = target is via_state or (via_state, target) in TRANSITIONS
        if legal:
            action = _poll(status, m, now, "stream" if mode == "stream" else "poll")
            assert m.state is target
            assert isinstance(action, Send | Sleep | ReadStream | Finish)
            if isinstance(action, Finish):
                assert action.state in TERMINAL_STATES | {S.REQUIRES_ACTION}
        else:
            with pytest.raises(RemoteProtocolError):
                _poll(status, m, now)
            assert m.state in (before, S.RUN_QUEUED)
            break
    times = [t.at for t in m.history]
    assert times == sorted(times)
    for prev, nxt in itertools.pairwise(m.history):
        assert (prev.state, nxt.state) in TRANSITIONS
    assert sum(m.durations().values()) == pytest.approx(m.history[-1].at - m.history[0].at)


def test_separate_thread_creation_then_run() -> None:
    """A new thread that needs additional_instructions is created first, then the run."""
    m = RunMachine(mode="stream", now=0.0, separate_thread=True)
    assert m.start(0.0) == Send(Op.CREATE_THREAD)
    assert m.thread_ready("thread_1", 0.1) == Send(Op.CREATE_RUN, stream=True)
    assert [t.state for t in m.history] == [S.PENDING, S.THREAD_CREATED, S.MESSAGE_POSTED]
    assert _poll("queued", m, 0.2, "stream") == ReadStream()
    with pytest.raises(LocalProtocolError):
        m.thread_ready("thread_2", 0.3)


def test_replan_recomputes_the_sleep_from_the_schedule() -> None:
    """While polling, replan() asks the (changed) schedule again; not allowed while streaming."""
    delays = {"value": 1.0}
    m = RunMachine(mode="poll", now=0.0, poll_delay=lambda elapsed: delays["value"])
    m.start(0.0)
    assert _poll("queued", m, 0.1, "response") == Sleep(1.1)
    delays["value"] = 0.05
    action = m.replan(0.3)
    assert action.until == pytest.approx(0.35)
    s = RunMachine(mode="stream", now=0.0)
    s.start(0.0)
    _poll("queued", s, 0.1, "stream")
    with pytest.raises(LocalProtocolError):
        s.replan(0.2)


def test_a_failed_poll_plans_another_poll_of_the_same_run() -> None:
    """`poll_failed` (a poll used up its attempts) plans the next poll at least a second later,
    and the run is then polled as before: the invocation does not fail."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    assert isinstance(
        m.run_update("queued", run_id="r", thread_id="t", now=0.1, via="response"), Sleep
    )
    nxt = m.poll_failed(0.5)
    assert isinstance(nxt, Sleep) and nxt.until >= 1.5
    assert m.timer(nxt.until) == Send(Op.GET_RUN)
    assert not m.finished


def test_poll_failed_needs_a_polled_run() -> None:
    """Before the run exists there is nothing to poll again."""
    m = RunMachine(mode="poll", now=0.0)
    m.start(0.0)
    with pytest.raises(LocalProtocolError):
        m.poll_failed(0.1)


def test_attach_follows_an_existing_run_by_polling() -> None:
    """With `attach`, the first request is a poll of the given run (nothing is created); the
    first sight of it moves pending -> run_queued -> its status; a completed run then has its
    messages listed."""
    m = RunMachine(mode="poll", now=0.0, thread_id="t", run_id="r", attach=True)
    assert m.state is State.PENDING
    assert m.start(0.0) == Send(Op.GET_RUN)
    assert m.run_update("completed", run_id="r", thread_id="t", now=0.2, via="poll") == Send(
        Op.LIST_MESSAGES
    )
    assert [t.state for t in m.history] == [State.PENDING, State.RUN_QUEUED, State.COMPLETED]
    with pytest.raises(RemoteProtocolError):
        RunMachine(mode="poll", now=0.0, thread_id="t", run_id="r", attach=True).run_update(
            "queued", run_id="other", thread_id="t", now=0.1, via="poll"
        )
    with pytest.raises(LocalProtocolError):
        RunMachine(mode="stream", now=0.0, thread_id="t", run_id="r", attach=True)
