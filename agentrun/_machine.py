"""The run state machine: one agent invocation, as a pure transition table and step functions.

No I/O, no event loop and no clock: the driver (`agentrun._driver`) feeds in what happened
(a run status from a response, a poll or a stream event; a stream that ended; a timer that
fired; a local cancel or deadline) with the time it happened, and gets back the next `Action`:
send this request, sleep until then, keep reading the stream, or finish.

The table `TRANSITIONS` is the single source of truth for which moves are legal; the diagram
in `docs/state-machine.md` is generated from it (`python -m agentrun._machine`), and a test
fails when the two disagree. A move the table does not allow raises `LocalProtocolError` when
agentrun asked for it, and `RemoteProtocolError` when the service reported it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from typing import Literal

import attrs

from agentrun._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ACTIVE_STATES",
    "STATUS_TO_STATE",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Finish",
    "Op",
    "Outcome",
    "ReadStream",
    "RunMachine",
    "Send",
    "Sleep",
    "State",
    "Transition",
    "mermaid_diagram",
]


class State(str, enum.Enum):
    """Where an invocation is. The first four are ours; the rest mirror the service's run status."""

    PENDING = "pending"
    THREAD_CREATED = "thread_created"
    MESSAGE_POSTED = "message_posted"
    RUN_QUEUED = "run_queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    INCOMPLETE = "incomplete"

    def __str__(self) -> str:
        return self.value


S = State

TERMINAL_STATES: frozenset[State] = frozenset(
    {S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED, S.INCOMPLETE}
)
#: States in which a run exists on the service and may still change.
ACTIVE_STATES: frozenset[State] = frozenset(
    {S.RUN_QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING}
)

#: The service's run `status` values and the state each one means.
STATUS_TO_STATE: Mapping[str, State] = {
    "queued": S.RUN_QUEUED,
    "in_progress": S.IN_PROGRESS,
    "requires_action": S.REQUIRES_ACTION,
    "cancelling": S.CANCELLING,
    "completed": S.COMPLETED,
    "failed": S.FAILED,
    "cancelled": S.CANCELLED,
    "expired": S.EXPIRED,
    "incomplete": S.INCOMPLETE,
}

_REMOTE_ENDS = {
    S.COMPLETED: "completed",
    S.FAILED: "failed",
    S.EXPIRED: "expired",
    S.INCOMPLETE: "incomplete",
}


def _table() -> dict[tuple[State, State], str]:
    t: dict[tuple[State, State], str] = {
        # Local progress before a run exists. The API merges steps (create-thread-and-run puts
        # the thread, its messages and the run in one request), so states may be skipped.
        (S.PENDING, S.THREAD_CREATED): "thread.created",
        (S.PENDING, S.RUN_QUEUED): "run created",
        (S.THREAD_CREATED, S.MESSAGE_POSTED): "message created",
        (S.THREAD_CREATED, S.RUN_QUEUED): "run created",
        (S.MESSAGE_POSTED, S.RUN_QUEUED): "run created",
        # Cancelled before the service ever saw a run: nothing to cancel remotely.
        (S.PENDING, S.CANCELLED): "local cancel",
        (S.THREAD_CREATED, S.CANCELLED): "local cancel",
        (S.MESSAGE_POSTED, S.CANCELLED): "local cancel",
        # The service's run lifecycle. A poll can miss intermediate statuses, so an active
        # state may jump to any later one.
        (S.RUN_QUEUED, S.IN_PROGRESS): "in_progress",
        (S.RUN_QUEUED, S.REQUIRES_ACTION): "requires_action",
        (S.IN_PROGRESS, S.REQUIRES_ACTION): "requires_action",
        (S.REQUIRES_ACTION, S.RUN_QUEUED): "tool outputs submitted",
        (S.REQUIRES_ACTION, S.IN_PROGRESS): "tool outputs submitted",
        (S.CANCELLING, S.CANCELLED): "cancelled",
    }
    for src in (S.RUN_QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION):
        t[(src, S.CANCELLING)] = "cancel"
        t[(src, S.CANCELLED)] = "cancelled"
        for dst, label in _REMOTE_ENDS.items():
            t[(src, dst)] = label
    # A cancel races with the run finishing: the run may still end any other way.
    for dst, label in _REMOTE_ENDS.items():
        t[(S.CANCELLING, dst)] = label
    return t


#: Every legal move, labelled with what causes it.
TRANSITIONS: Mapping[tuple[State, State], str] = _table()


class Op(str, enum.Enum):
    """The requests a machine asks its driver to send."""

    CREATE_THREAD = "create_thread"  # with the input messages; then CREATE_RUN
    CREATE_THREAD_AND_RUN = "create_thread_and_run"
    CREATE_RUN = "create_run"
    SUBMIT_TOOL_OUTPUTS = "submit_tool_outputs"
    GET_RUN = "get_run"
    LIST_MESSAGES = "list_messages"
    CANCEL_RUN = "cancel_run"
    FIND_RUN = "find_run"  # list the thread's newest run: a stream broke before its id arrived


@attrs.frozen
class Send:
    """Send this request; report the answer with `run_update` (or `messages_fetched`)."""

    op: Op
    stream: bool = False


@attrs.frozen
class Sleep:
    """Wait until `until` (driver clock), then call `timer`."""

    until: float


@attrs.frozen
class ReadStream:
    """Keep reading the open event stream."""


class Outcome(str, enum.Enum):
    """What an invocation that finished means for its caller (`Finish.outcome`)."""

    #: ``completed`` or ``requires_action``: the caller gets the result.
    REPLY = "reply"
    #: ``failed``, ``cancelled``, ``expired``, ``incomplete``: the caller gets a `RunError`.
    RUN_ERROR = "run_error"
    #: The stream broke before the service confirmed a run: none may exist.
    NO_RUN = "no_run"


@attrs.frozen
class Finish:
    """The invocation is over; `state` is where it ended (terminal, or `requires_action`).

    `unseen` is True when events of the run went unseen (poll mode, or a stream that broke):
    what a stream would have shown (text written before tool calls, built-in tool steps) is
    then listed by the driver.
    """

    state: State
    unseen: bool = attrs.field(default=False, eq=False)

    @property
    def outcome(self) -> Outcome:
        """What the end means for the caller: a result, a run error, or no run at all."""
        if self.state in (S.COMPLETED, S.REQUIRES_ACTION):
            return Outcome.REPLY
        if self.state in TERMINAL_STATES:
            return Outcome.RUN_ERROR
        return Outcome.NO_RUN

    @property
    def run_ended(self) -> bool:
        """Whether the run reached a status it never leaves (its duration is known)."""
        return self.state in TERMINAL_STATES

    @property
    def has_reply(self) -> bool:
        """Whether the run wrote a reply the caller receives (text, possibly partial)."""
        return self.state in (S.COMPLETED, S.REQUIRES_ACTION, S.INCOMPLETE)


Action = Send | Sleep | ReadStream | Finish

Via = Literal["response", "poll", "stream"]


@attrs.frozen
class Transition:
    """One recorded move: the state entered, when (driver clock), and what caused it."""

    state: State
    at: float
    cause: str


PollDelay = Callable[[float], float]
"""Given seconds since the run was created, how long to wait before the next poll."""


def _default_poll_delay(elapsed: float) -> float:
    return min(1.0, 0.1 + elapsed * 0.25)


class RunMachine:
    """The state of one invocation.

    `mode` is "stream" (one streamed request; polling only if the stream breaks) or "poll".
    With `thread_id` the run continues that thread; with `run_id` as well, the invocation
    resumes a run that waits in `requires_action` by submitting tool outputs, or, with
    `attach`, follows that existing run: polls it to its end, creating nothing.
    """

    # One machine lives as long as its invocation (10,000 in flight at once): no __dict__.
    __slots__ = (
        "_finished",
        "_need_messages",
        "_poll_delay",
        "_run_created_at",
        "_started",
        "_unseen",
        "attach",
        "cancel_reason",
        "history",
        "mode",
        "run_id",
        "separate_thread",
        "state",
        "streaming",
        "thread_id",
    )

    def __init__(
        self,
        *,
        mode: Literal["stream", "poll"],
        now: float,
        thread_id: str | None = None,
        run_id: str | None = None,
        poll_delay: PollDelay = _default_poll_delay,
        separate_thread: bool = False,
        attach: bool = False,
    ) -> None:
        if run_id is not None and thread_id is None:
            raise LocalProtocolError("a run_id needs its thread_id")
        if attach and (run_id is None or mode != "poll"):
            raise LocalProtocolError("attaching needs a run_id, in poll mode")
        self.attach = attach
        self.mode: Literal["stream", "poll"] = mode
        self.separate_thread = separate_thread
        self.thread_id = thread_id
        self.run_id = run_id
        self.streaming = False
        self.cancel_reason: str | None = None
        self._poll_delay = poll_delay
        self._run_created_at: float | None = None
        self._need_messages = mode == "poll"
        self._unseen = mode == "poll"
        self._started = False
        self._finished: Finish | None = None
        # An attached run's status is unknown until the first poll (which moves it on from
        # pending, as the first sight of any run does).
        self.state = S.REQUIRES_ACTION if run_id is not None and not attach else S.PENDING
        self.history: list[Transition] = [Transition(self.state, now, "start")]

    # -- inspection -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def durations(self) -> dict[State, float]:
        """Seconds spent in each state, from the recorded transitions (last state excluded)."""
        out: dict[State, float] = {}
        for prev, nxt in itertools.pairwise(self.history):
            out[prev.state] = out.get(prev.state, 0.0) + (nxt.at - prev.at)
        return out

    # -- inputs ---------------------------------------------------------------------------

    def start(self, now: float) -> Send:
        """The first request: create the run (new thread, continued thread) or submit outputs."""
        if self._started:
            raise LocalProtocolError("the invocation was already started")
        self._started = True
        stream = self.mode == "stream"
        self.streaming = stream
        if self.attach:
            return Send(Op.GET_RUN)
        if self.run_id is not None:
            return Send(Op.SUBMIT_TOOL_OUTPUTS, stream=stream)
        if self.thread_id is not None:
            return Send(Op.CREATE_RUN, stream=stream)
        if self.separate_thread:
            self.streaming = False
            return Send(Op.CREATE_THREAD)
        return Send(Op.CREATE_THREAD_AND_RUN, stream=stream)

    def thread_ready(self, thread_id: str, now: float) -> Send:
        """The answer to `CREATE_THREAD`: the thread exists with the input; create the run."""
        self._check_live()
        if self.state is not S.PENDING or self.thread_id is not None:
            raise LocalProtocolError(f"thread_ready in state {self.state}")
        self.thread_id = thread_id
        self._move(S.THREAD_CREATED, now, "thread created", remote=False)
        self._move(S.MESSAGE_POSTED, now, "messages posted with the thread", remote=False)
        self.streaming = self.mode == "stream"
        return Send(Op.CREATE_RUN, stream=self.streaming)

    def thread_created(self, thread_id: str, now: float) -> Action:
        """A `thread.created` stream event: the thread and its messages exist."""
        self._check_live()
        if self.thread_id is not None and self.thread_id != thread_id:
            raise RemoteProtocolError(f"thread id changed from {self.thread_id} to {thread_id}")
        self.thread_id = thread_id
        if self.state is S.PENDING:
            self._move(S.THREAD_CREATED, now, "thread.created", remote=True)
        return ReadStream()

    def run_update(
        self, status: str, *, run_id: str, thread_id: str, now: float, via: Via
    ) -> Action:
        """A run object arrived: the answer to a create, poll, cancel or submit, or an event."""
        self._check_live()
        target = STATUS_TO_STATE.get(status)
        if target is None:
            raise RemoteProtocolError(f"unknown run status {status!r} for run {run_id}")
        if self.run_id is None:
            self.run_id = run_id
            self._run_created_at = now
        elif run_id != self.run_id:
            raise RemoteProtocolError(f"got run {run_id} while driving run {self.run_id}")
        if self.thread_id is None:
            self.thread_id = thread_id
        elif thread_id != self.thread_id:
            msg = f"run {run_id} is on thread {thread_id}, not {self.thread_id}"
            raise RemoteProtocolError(msg)
        if self._run_created_at is None:
            self._run_created_at = now
        if self.state in (S.PENDING, S.THREAD_CREATED, S.MESSAGE_POSTED):
            # The first sight of the run: it was created (every run starts queued), whatever
            # status it has reached by the time we hear of it.
            self._move(S.RUN_QUEUED, now, _cause(via, "run created"), remote=True)
        if target is not self.state:
            self._move(target, now, _cause(via, status), remote=True)
        return self._next(now, via)

    def stream_done(self, now: float) -> Action:
        """The `done` event (or a clean end of the stream body)."""
        self._check_live()
        self.streaming = False
        if self.state in TERMINAL_STATES or self.state is S.REQUIRES_ACTION:
            if self._need_messages and self.state is not S.REQUIRES_ACTION:
                return Send(Op.LIST_MESSAGES)
            return self._finish()
        return self._stream_lost(now)

    def stream_lost(self, now: float) -> Action:
        """The stream broke (or ended early): finish the same run by polling it."""
        self._check_live()
        self.streaming = False
        self._unseen = True
        return self._stream_lost(now)

    def timer(self, now: float) -> Send:
        """A `Sleep` elapsed: poll the run."""
        self._check_live()
        if self.run_id is None:
            raise LocalProtocolError("cannot poll before the run exists")
        return Send(Op.GET_RUN)

    def poll_failed(self, now: float) -> Sleep:
        """A poll of the known run failed (the transport used up its attempts): poll it again.

        The run exists and may still finish, so the invocation keeps polling it until its
        deadline instead of failing (and leaving the run unseen). The next poll waits at least
        a second, and longer as the run gets older, like a planned poll.
        """
        self._check_live()
        if self.run_id is None or self.streaming:
            raise LocalProtocolError("poll_failed while the run is not being polled")
        created = self._run_created_at if self._run_created_at is not None else now
        return Sleep(now + max(1.0, self._poll_delay(now - created)))

    def replan(self, now: float) -> Sleep:
        """The poll schedule changed while sleeping: when should the next poll be now?"""
        self._check_live()
        if self.run_id is None or self.streaming:
            raise LocalProtocolError("nothing to re-plan: the run is not being polled")
        created = self._run_created_at if self._run_created_at is not None else now
        return Sleep(now + max(0.0, self._poll_delay(now - created)))

    def messages_fetched(self, now: float) -> Finish:
        """The run's messages were listed after it ended."""
        self._check_live()
        if self.state not in TERMINAL_STATES:
            raise LocalProtocolError(f"messages fetched while the run is {self.state}")
        return self._finish()

    def cancel(self, now: float, reason: str = "cancel") -> Action:
        """The caller cancelled, or the deadline passed (`reason="deadline"`)."""
        self._check_live()
        self.cancel_reason = reason
        self.streaming = False
        if self.state in TERMINAL_STATES:
            return self._finish()
        if self.run_id is None:
            self._move(S.CANCELLED, now, f"local {reason}", remote=False)
            return self._finish()
        if self.state is not S.CANCELLING:
            self._move(S.CANCELLING, now, f"local {reason}", remote=False)
        return Send(Op.CANCEL_RUN)

    # -- internals ------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self._finished is not None:
            raise LocalProtocolError(f"the invocation already finished ({self.state})")

    def _move(self, target: State, now: float, cause: str, *, remote: bool) -> None:
        if (self.state, target) not in TRANSITIONS:
            msg = f"illegal transition {self.state} -> {target} ({cause})"
            raise RemoteProtocolError(msg) if remote else LocalProtocolError(msg)
        self.state = target
        self.history.append(Transition(target, now, cause))

    def _finish(self) -> Finish:
        self._finished = Finish(self.state, unseen=self._unseen)
        return self._finished

    def _stream_lost(self, now: float) -> Action:
        if self.state in TERMINAL_STATES or self.state is S.REQUIRES_ACTION:
            # The run ended but we may have missed its last message events.
            if self.state is S.REQUIRES_ACTION:
                return self._finish()
            return Send(Op.LIST_MESSAGES)
        self._need_messages = True
        if self.run_id is None:
            # The service may have created the run before the stream broke. On a known thread
            # the driver looks it up (never creates a second one); with nothing known, the
            # invocation ends here and the driver reports the broken connection.
            if self.thread_id is not None:
                return Send(Op.FIND_RUN)
            return self._finish()
        return Send(Op.GET_RUN)

    def _next(self, now: float, via: Via) -> Action:
        state = self.state
        if self.streaming and via == "stream":
            return ReadStream()
        if state is S.REQUIRES_ACTION and self.cancel_reason is None:
            return self._finish()
        if state in TERMINAL_STATES:
            # A failed run may have written part of its reply: list it too (same as a stream).
            if self._need_messages and state in (S.COMPLETED, S.INCOMPLETE, S.FAILED):
                return Send(Op.LIST_MESSAGES)
            return self._finish()
        if self.streaming:
            return ReadStream()
        created = self._run_created_at if self._run_created_at is not None else now
        return Sleep(now + max(0.0, self._poll_delay(now - created)))


#: The causes of the moves a run update makes, one string each: a machine's history holds one
#: per move, and 10,000 machines in flight would otherwise hold as many copies (issue 15).
#: Bounded: `via` is one of three values and the status one the table knows.
_CAUSES: dict[tuple[str, str], str] = {}


def _cause(via: str, what: str) -> str:
    """``f"{via}: {what}"``, shared."""
    cause = _CAUSES.get((via, what))
    if cause is None:
        cause = _CAUSES[(via, what)] = f"{via}: {what}"
    return cause


def mermaid_diagram() -> str:
    """The state diagram of `TRANSITIONS`, as a Mermaid `stateDiagram-v2` block."""
    lines = ["```mermaid", "stateDiagram-v2"]
    lines.append(f"    [*] --> {S.PENDING.value}")
    for (src, dst), label in TRANSITIONS.items():
        lines.append(f"    {src.value} --> {dst.value}: {label}")
    for state in State:
        if state in TERMINAL_STATES:
            lines.append(f"    {state.value} --> [*]")
    lines.append(f"    {S.REQUIRES_ACTION.value} --> [*]: returned to the caller")
    lines.append("```")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(mermaid_diagram(), end="")
