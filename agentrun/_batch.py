"""The batch engine behind `agentrun batch`: input parsing, resume, output writing, progress.

No terminal output here: the command line (`_cli_batch`) and the demo draw the live view and
the summary from the `BatchProgress` and `BatchSummary` this module keeps.

Input: one JSON object a line, either
``{"custom_id", "messages" | "prompt", "model"?, "thread_id"?, "instructions"?, ...OpenAI params}``
or an OpenAI Batch API request line ``{"custom_id", "method": "POST",
"url": "/v1/chat/completions", "body": {...}}``.

Output: one JSON object a line in the OpenAI Batch output shape (``id``, ``custom_id``,
``response: {status_code, request_id, body}``, ``error: {code, message}``) plus ``thread_id``,
``run_id``, ``line``, ``timings`` and ``requests``. The file is append-only, written one whole
line per write, flushed after each line and synced to disk regularly and at the end, so a rerun
with the same output file resumes: it skips the items that have a line (failed ones too, unless
`retry_failed`), and truncates a torn last line left by a crash. A failed item whose line names
a run that had not ended (a lost connection, a timeout) is never run a second time while that
run may still finish: `retry_failed` follows the recorded run first, and runs the item again
only if that run ended without a reply.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import pathlib
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import IO, Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from agentrun import _otel
from agentrun._auth import is_certificate_failure
from agentrun._client import AsyncClient, Mode
from agentrun._errors import (
    AgentRunError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    CertificateVerificationError,
    ConfigurationError,
    PermissionDeniedError,
    RunError,
    RunIncompleteError,
)
from agentrun._fanout import fan_out
from agentrun._machine import State
from agentrun._openai import (
    MODEL_PREFIX,
    ChatCompletion,
    chat,
    completion_from_result,
    parse_model,
)
from agentrun._results import RunResult, percentile

__all__ = [
    "BatchConfig",
    "BatchError",
    "BatchItem",
    "BatchProgress",
    "BatchRunner",
    "BatchSummary",
    "DuplicateIdsError",
    "InputError",
    "OutputWriter",
    "ResumeState",
    "iter_input",
    "parse_line",
    "read_output",
]

#: The Agent Service keeps metadata values up to 512 characters, and at most 16 keys.
METADATA_VALUE_MAX = 512
METADATA_KEYS_MAX = 16
CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
_BATCH_API_KEYS = frozenset({"custom_id", "method", "url", "body"})
#: Per-state samples kept for the percentiles (a reservoir: memory stays bounded).
_SAMPLES = 50_000
#: How long an item waits for an unreachable token endpoint when the batch has no --timeout.
_TOKEN_WAIT_DEFAULT = 600.0
logger = logging.getLogger("agentrun.batch")
_RATE_WINDOW = 10.0
#: Error types that say the item's run ended (so running the item again cannot duplicate it).
_RUN_ENDED_ERRORS = frozenset(
    {"RunFailedError", "RunCancelledError", "RunExpiredError", "RunIncompleteError"}
)

#: How often (seconds) the `agentrun` logger reports a running batch's progress at INFO.
LOG_INTERVAL = 30.0


class BatchError(AgentRunError):
    """The batch cannot start (unreadable input, output same as input, ...)."""


class DuplicateIdsError(BatchError):
    """Some custom_ids occur on more than one input line: `duplicates` maps each to its lines."""

    def __init__(self, duplicates: Mapping[str, list[int]]) -> None:
        self.duplicates = dict(duplicates)
        shown = list(self.duplicates.items())[:10]
        names = ", ".join(
            f"{cid!r} (lines {', '.join(str(n) for n in lines)})" for cid, lines in shown
        )
        more = len(self.duplicates) - len(shown)
        if more > 0:
            names += f" and {more} more"
        super().__init__(
            f"duplicate custom_id in the input: {names}; make every custom_id unique "
            "(nothing was run)"
        )


# -- input ------------------------------------------------------------------------------------


@attrs.frozen
class BatchItem:
    """One valid input line: what `chat()` gets for it."""

    line: int
    custom_id: str
    model: str
    messages: list[Any]
    thread_id: str | None = None
    instructions: str | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    params: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class InputError:
    """A malformed input line: its number, its custom_id when it had one, and why."""

    line: int
    custom_id: str | None
    message: str


def to_model(name: str) -> str:
    """`azure_ai/agents/ID` from an agent id or a model string; ConfigurationError if bad."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("the model must be an agent id or 'azure_ai/agents/<agent id>'")
    name = name.strip()
    if not name.startswith(MODEL_PREFIX) and "/" in name:
        raise ConfigurationError(
            f"{name!r} is not an agent: use an agent id (asst_abc123) or "
            "'azure_ai/agents/<agent id>'"
        )
    model = name if name.startswith(MODEL_PREFIX) else MODEL_PREFIX + name
    parse_model(model)
    return model


def parse_line(text: str, line: int, default_model: str | None = None) -> BatchItem | InputError:
    """Parse one input line (already known not to be blank)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return InputError(
            line, None, f"line {line}: not valid JSON: {exc.msg} (column {exc.colno})"
        )
    if not isinstance(data, dict):
        return InputError(line, None, f"line {line}: a line must be a JSON object")
    cid = data.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return InputError(line, None, f"line {line}: needs a non-empty string custom_id")

    def bad(message: str) -> InputError:
        return InputError(line, cid, f"line {line}: {message}")

    if len(cid) > METADATA_VALUE_MAX:
        return bad(
            f"custom_id is {len(cid)} characters; at most {METADATA_VALUE_MAX} fit in the "
            "run's metadata"
        )
    if "body" in data or "url" in data or "method" in data:
        extra = sorted(set(data) - _BATCH_API_KEYS)
        if extra:
            return bad(f"a Batch API line has custom_id, method, url and body; not {extra}")
        method = data.get("method", "POST")
        if not isinstance(method, str) or method.upper() != "POST":
            return bad(f"method {method!r} is not supported: use POST")
        url = data.get("url")
        if url not in CHAT_URLS:
            return bad(f"url {url!r} is not supported: agentrun runs /v1/chat/completions")
        body = data.get("body")
        if not isinstance(body, dict):
            return bad("body must be a JSON object (the chat completion request)")
        fields = dict(body)
    else:
        fields = {k: v for k, v in data.items() if k != "custom_id"}

    raw_model = fields.pop("model", None) or default_model
    if raw_model is None:
        return bad('no model: add "model" to the line or pass --agent/--model')
    try:
        model = to_model(raw_model)
    except ConfigurationError as exc:
        return bad(str(exc))

    messages = fields.pop("messages", None)
    prompt = fields.pop("prompt", None)
    if messages is not None and prompt is not None:
        return bad("give either messages or prompt, not both")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            return bad("prompt must be a non-empty string")
        messages = [{"role": "user", "content": prompt}]
    elif messages is None:
        return bad("needs messages (a list of chat messages) or prompt (a string)")
    elif (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        return bad("messages must be a non-empty list of objects with a role")

    thread_id = fields.pop("thread_id", None)
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        return bad("thread_id must be a non-empty string")
    instructions = fields.pop("instructions", None)
    if instructions is not None and not isinstance(instructions, str):
        return bad("instructions must be a string")
    # The batch always collects the whole reply; a stream flag asks for nothing else here.
    fields.pop("stream", None)
    fields.pop("stream_options", None)
    metadata = fields.pop("metadata", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return bad("metadata must be an object of strings")
    metadata = {**metadata, "custom_id": cid}
    if len(metadata) > METADATA_KEYS_MAX:
        return bad(f"metadata has {len(metadata)} keys with custom_id; at most {METADATA_KEYS_MAX}")
    too_long = [k for k, v in metadata.items() if len(v) > METADATA_VALUE_MAX]
    if too_long:
        return bad(f"metadata value(s) longer than {METADATA_VALUE_MAX} characters: {too_long}")
    return BatchItem(
        line=line,
        custom_id=cid,
        model=model,
        messages=messages,
        thread_id=thread_id,
        instructions=instructions,
        metadata=metadata,
        params=fields,
    )


def iter_input(
    path: str | os.PathLike[str], default_model: str | None = None
) -> Iterator[BatchItem | InputError]:
    """Parse the input file line by line (streamed; blank lines are skipped)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                yield parse_line(text, number, default_model)


# -- resume -----------------------------------------------------------------------------------


@attrs.define
class ResumeState:
    """What an existing output file says is done: custom_ids that succeeded and that failed,
    and input line numbers of malformed lines without a custom_id."""

    succeeded: set[str] = attrs.field(factory=set)
    failed: set[str] = attrs.field(factory=set)
    failed_lines: set[int] = attrs.field(factory=set)
    #: custom_id -> (thread_id, run_id) of a failed item whose run may not have ended.
    runs: dict[str, tuple[str, str]] = attrs.field(factory=dict)
    lines: int = 0
    torn_bytes: int = 0
    unreadable: int = 0


def read_output(path: str | os.PathLike[str], *, repair: bool = True) -> ResumeState:
    """Read an output file for resuming. A torn last line (no newline: the writer was killed
    mid-write) is cut off when `repair`, so the next line starts on a line of its own."""
    state = ResumeState()
    p = pathlib.Path(path)
    if not p.exists():
        return state
    good_end = 0
    with open(p, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                state.torn_bytes = len(raw)
                break
            good_end += len(raw)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                state.unreadable += 1
                continue
            if not isinstance(obj, dict):
                state.unreadable += 1
                continue
            state.lines += 1
            cid = obj.get("custom_id")
            ok = obj.get("error") is None and _status(obj) == 200
            if isinstance(cid, str):
                if ok:
                    state.succeeded.add(cid)
                    state.failed.discard(cid)
                    state.runs.pop(cid, None)
                elif cid not in state.succeeded:
                    state.failed.add(cid)
                    run = _open_run(obj)
                    if run is not None:
                        state.runs[cid] = run
                    elif obj.get("run_id") is not None:
                        state.runs.pop(cid, None)  # a later attempt saw the run end
            elif isinstance(obj.get("line"), int):
                state.failed_lines.add(obj["line"])
    if state.torn_bytes and repair:
        with open(p, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return state


def _open_run(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(thread_id, run_id) of a failed line whose run may still be going, else None."""
    thread_id, run_id = obj.get("thread_id"), obj.get("run_id")
    if not isinstance(thread_id, str) or not isinstance(run_id, str) or not run_id:
        return None
    error = obj.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return None if kind in _RUN_ENDED_ERRORS else (thread_id, run_id)


def _status(obj: Mapping[str, Any]) -> int | None:
    resp = obj.get("response")
    if isinstance(resp, dict) and isinstance(resp.get("status_code"), int):
        return int(resp["status_code"])
    return None


# -- output -----------------------------------------------------------------------------------


class OutputWriter:
    """Appends whole JSON lines: one write and a flush per line, fsync every `sync_interval`
    seconds or `sync_lines` lines (whichever first), and on close."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync_interval: float = 1.0,
        sync_lines: int = 1000,
    ) -> None:
        self._f: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed by close()
        self._sync_interval = sync_interval
        self._sync_lines = sync_lines
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self.lines = 0

    def write(self, obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._f.write(data.encode("utf-8"))
        self._f.flush()
        self.lines += 1
        self._unsynced += 1
        self.maybe_sync()

    def maybe_sync(self) -> None:
        if self._unsynced and (
            self._unsynced >= self._sync_lines
            or time.monotonic() - self._last_sync >= self._sync_interval
        ):
            self.sync()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._f.closed:
            return
        try:
            self.sync()
        finally:
            self._f.close()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _request_id() -> str:
    return "batch_req_" + uuid.uuid4().hex[:24]


def _durations(history: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    hist = list(history or ())
    for prev, nxt in itertools.pairwise(hist):
        key = prev.state.value if isinstance(prev.state, State) else str(prev.state)
        out[key] = out.get(key, 0.0) + (nxt.at - prev.at)
    return out


def _timings(durations: Mapping[str, float], total: float) -> dict[str, float]:
    out = {k: round(v, 4) for k, v in durations.items()}
    out["total"] = round(total, 4)
    return out


def success_line(item: BatchItem, resp: ChatCompletion, elapsed: float) -> dict[str, Any]:
    """The output line of an item that got its chat completion."""
    result = resp.run_result
    durations = _durations(result.history) if result is not None else {}
    return {
        "id": _request_id(),
        "custom_id": item.custom_id,
        "response": {
            "status_code": 200,
            "request_id": resp.run_result.request_id if resp.run_result else None,
            "body": resp.to_dict(),
        },
        "error": None,
        "thread_id": resp.get("thread_id"),
        "run_id": resp.get("run_id"),
        "line": item.line,
        "timings": _timings(durations, elapsed),
        "requests": result.requests if result is not None else None,
    }


def error_kind(exc: BaseException) -> tuple[str, str]:
    """(error type, code) of a failed item, for the output line and the summary."""
    if isinstance(exc, RunError):
        return type(exc).__name__, exc.code or exc.status
    if isinstance(exc, APITimeoutError):
        return type(exc).__name__, "timeout"
    if isinstance(exc, APIStatusError):
        if exc.code:
            return type(exc).__name__, exc.code
        if exc.status_code == 400 and exc.body is None and exc.request_id is None:
            return type(exc).__name__, "invalid_request"  # refused before it was sent
        return type(exc).__name__, f"http_{exc.status_code}"
    if isinstance(exc, APIConnectionError):
        return type(exc).__name__, "connection_error"
    if isinstance(exc, (ConfigurationError, ValueError)):
        return type(exc).__name__, "invalid_request"
    return type(exc).__name__, "internal_error"


def error_line(item: BatchItem, exc: BaseException, elapsed: float) -> dict[str, Any]:
    """The output line of an item whose invocation raised `exc`."""
    kind, code = error_kind(exc)
    response: dict[str, Any] | None = None
    if isinstance(exc, APIStatusError):
        body = dict(exc.body) if isinstance(exc.body, Mapping) else None
        response = {
            "status_code": exc.status_code,
            "request_id": exc.request_id,
            "body": body or {"error": {"code": code, "message": str(exc)}},
        }
    history = getattr(exc, "history", ())
    return {
        "id": _request_id(),
        "custom_id": item.custom_id,
        "response": response,
        "error": {"code": code, "message": str(exc) or kind, "type": kind},
        "thread_id": getattr(exc, "thread_id", None) or item.thread_id,
        "run_id": getattr(exc, "run_id", None),
        "line": item.line,
        "timings": _timings(_durations(history), elapsed),
        "requests": None,
    }


def input_error_line(err: InputError) -> dict[str, Any]:
    """The output line of a malformed input line."""
    return {
        "id": _request_id(),
        "custom_id": err.custom_id,
        "response": None,
        "error": {"code": "invalid_input_line", "message": err.message, "type": "InputError"},
        "thread_id": None,
        "run_id": None,
        "line": err.line,
        "timings": None,
        "requests": None,
    }


# -- progress and statistics ------------------------------------------------------------------


@attrs.define
class BatchProgress:
    """Live counters for a view to draw. `queued` items wait to start, `in_progress` run."""

    total: int = 0
    to_run: int = 0
    skipped_ok: int = 0
    skipped_failed: int = 0
    started: int = 0
    completed: int = 0
    failed: int = 0
    started_at: float = attrs.field(factory=time.monotonic)
    finished_at: float | None = None
    interrupted: bool = False
    _recent: deque[float] = attrs.field(factory=deque)

    @property
    def queued(self) -> int:
        return max(0, self.to_run - self.started)

    @property
    def in_progress(self) -> int:
        return max(0, self.started - self.completed - self.failed)

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def elapsed(self) -> float:
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at

    def note_finished(self, ok: bool) -> None:
        if ok:
            self.completed += 1
        else:
            self.failed += 1
        now = time.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > _RATE_WINDOW:
            self._recent.popleft()

    def rate(self) -> float:
        """Items finished per second, over the last few seconds (overall once finished)."""
        if self.finished_at is not None or self.elapsed < _RATE_WINDOW:
            return self.done / self.elapsed if self.elapsed > 0 else 0.0
        now = time.monotonic()
        while self._recent and now - self._recent[0] > _RATE_WINDOW:
            self._recent.popleft()
        return len(self._recent) / _RATE_WINDOW

    def eta(self) -> float | None:
        """Seconds until all items are done at the current rate (None when unknown)."""
        left = self.to_run - self.done
        if left <= 0:
            return 0.0
        rate = self.rate()
        return left / rate if rate > 0 else None


class _Reservoir:
    """A uniform sample of at most `size` values (algorithm R)."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._rng = rng

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.values[j] = value


@attrs.frozen
class BatchSummary:
    """What a batch did. Failures are keyed "ErrorType: code"."""

    total: int
    ran: int
    completed: int
    failed: int
    skipped_ok: int
    skipped_failed: int
    elapsed: float
    interrupted: bool
    failures: Mapping[str, int]
    state_times: Mapping[str, Mapping[str, float]]
    runs_measured: int
    requests_per_run: float
    requests_max: int
    http_requests: int
    token_requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    output_lines: int

    @property
    def ok(self) -> bool:
        """No failures, none left from an earlier run, and not interrupted."""
        return not self.failed and not self.skipped_failed and not self.interrupted


@attrs.frozen
class BatchConfig:
    """How to run a batch (see `agentrun batch --help`)."""

    input_path: pathlib.Path
    output_path: pathlib.Path
    default_model: str | None = None
    concurrency: int = 100
    timeout: float | None = None
    mode: Mode | None = None
    retry_failed: bool = False
    drop_params: bool = False
    sync_interval: float = 1.0
    sync_lines: int = 1000


class BatchRunner:
    """Runs one batch: `prepare()` (no network), then `await run(client)`; `progress` is live.

    A failure of one item becomes its error line. An authentication or permission error, or an
    untrusted TLS certificate, stops the batch (every other item would fail the same way): `run`
    raises it after cancelling what is in flight, and writes no line for the items it did not
    finish. An unreachable token endpoint makes items wait and try again (see `_invoke`).
    """

    def __init__(self, config: BatchConfig) -> None:
        if config.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self.config = config
        self.progress = BatchProgress()
        self.resume = ResumeState()
        self._rng = random.Random(0)
        self._states: dict[str, _Reservoir] = {}
        self._total_time = _Reservoir(_SAMPLES, self._rng)
        self._failures: Counter[str] = Counter()
        self._requests = 0
        self._requests_max = 0
        self._measured = 0
        self._tokens = [0, 0, 0]
        self._fatal: BaseException | None = None
        #: times an item waited for an unreachable token endpoint
        self.token_waits = 0
        self._client: AsyncClient | None = None
        self._output_lines = 0
        self._prepared = False

    # -- before the network ------------------------------------------------------------------

    def prepare(self) -> BatchProgress:
        """Read the output (resume state, torn tail cut), scan the input for duplicate
        custom_ids (raising `DuplicateIdsError`) and count what will run."""
        cfg = self.config
        if not cfg.input_path.is_file():
            raise BatchError(f"input file {str(cfg.input_path)!r} does not exist")
        try:
            same = cfg.output_path.exists() and cfg.output_path.samefile(cfg.input_path)
        except OSError:
            same = False
        if same or cfg.output_path.resolve() == cfg.input_path.resolve():
            raise BatchError("the output file must not be the input file")
        self.resume = read_output(cfg.output_path)
        first_line: dict[str, int] = {}
        duplicates: dict[str, list[int]] = {}
        progress = self.progress
        for entry in iter_input(cfg.input_path, cfg.default_model):
            progress.total += 1
            cid = entry.custom_id
            if cid is not None:
                if cid in first_line:
                    duplicates.setdefault(cid, [first_line[cid]]).append(entry.line)
                    continue
                first_line[cid] = entry.line
            decision = self._decide(entry)
            if decision == "run":
                progress.to_run += 1
            elif decision == "skip_ok":
                progress.skipped_ok += 1
            else:
                progress.skipped_failed += 1
        if duplicates:
            raise DuplicateIdsError(duplicates)
        self._prepared = True
        return progress

    def _decide(self, entry: BatchItem | InputError) -> Literal["run", "skip_ok", "skip_failed"]:
        r = self.resume
        cid = entry.custom_id
        if cid is not None:
            if cid in r.succeeded:
                return "skip_ok"
            if cid in r.failed:
                return "run" if self.config.retry_failed else "skip_failed"
            return "run"
        if entry.line in r.failed_lines and not self.config.retry_failed:
            return "skip_failed"
        return "run"

    # -- the run -----------------------------------------------------------------------------

    async def run(self, client: AsyncClient) -> BatchSummary:
        """Run every item that has no line yet; return the summary.

        Cancelling the caller's scope (Ctrl-C) stops launching, cancels the runs in flight on
        the service (the client does that when their tasks are cancelled), writes no line for
        them, closes the output (synced) and re-raises the cancellation.
        """
        if not self._prepared:
            self.prepare()
        cfg = self.config
        self._client = client
        progress = self.progress
        progress.started_at = time.monotonic()
        logger.info(
            "batch %s -> %s: %d to run, %d already done, %d failed before and skipped; "
            "concurrency %d",
            cfg.input_path,
            cfg.output_path,
            progress.to_run,
            progress.skipped_ok,
            progress.skipped_failed,
            cfg.concurrency,
        )
        job = _otel.job_span(
            "agentrun.batch",
            {
                "agentrun.batch.input": str(cfg.input_path),
                "agentrun.batch.to_run": progress.to_run,
                "agentrun.batch.concurrency": cfg.concurrency,
            },
            tracer_provider=client._telemetry.tracer_provider,
        )
        try:
            with (
                job,
                OutputWriter(
                    cfg.output_path, sync_interval=cfg.sync_interval, sync_lines=cfg.sync_lines
                ) as out,
            ):
                try:
                    # `stop` ends the batch early (a fatal error); the items run in the same
                    # structured fan-out as `AsyncClient.map`, at most `concurrency` at once.
                    with anyio.CancelScope() as stop:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(self._sync_ticker, out)
                            work = functools.partial(self._one, client, out, stop)
                            async with fan_out(
                                self._runnable(out), work, cfg.concurrency
                            ) as finished:
                                async for _ in finished:
                                    pass
                            tg.cancel_scope.cancel()  # every item is done: stop the ticker
                finally:
                    self._output_lines = out.lines
        finally:
            progress.finished_at = time.monotonic()
            logger.info(
                "batch %s: %d succeeded, %d failed, %d not run, in %.1fs%s",
                cfg.input_path,
                progress.completed,
                progress.failed,
                progress.to_run - progress.completed - progress.failed,
                progress.elapsed,
                f"; stopped: {type(self._fatal).__name__}" if self._fatal is not None else "",
            )
        if self._fatal is not None:
            raise self._fatal
        return self.summary()

    async def _runnable(self, out: OutputWriter) -> AsyncIterator[BatchItem]:
        """The input's items to run, in order; lines that need no run are handled here."""
        cfg = self.config
        seen: set[str] = set()
        for n, entry in enumerate(iter_input(cfg.input_path, cfg.default_model)):
            if n % 256 == 0:
                await anyio.lowlevel.checkpoint()
            if entry.custom_id is not None:
                if entry.custom_id in seen:  # the input changed since prepare()
                    continue
                seen.add(entry.custom_id)
            if self._decide(entry) != "run":
                continue
            if isinstance(entry, InputError):
                self.progress.started += 1
                out.write(input_error_line(entry))
                self._failures["InputError: invalid_input_line"] += 1
                self.progress.note_finished(False)
                continue
            if self._fatal is not None:
                return
            yield entry

    async def _sync_ticker(self, out: OutputWriter) -> None:
        logged = time.monotonic()
        while True:
            await anyio.sleep(min(self.config.sync_interval, LOG_INTERVAL))
            out.maybe_sync()
            if time.monotonic() - logged >= LOG_INTERVAL:
                logged = time.monotonic()
                p = self.progress
                logger.info(
                    "batch %s: %d/%d done (%d failed), %d in progress, %.1f/s",
                    self.config.input_path,
                    p.done,
                    p.to_run,
                    p.failed,
                    p.in_progress,
                    p.rate(),
                )

    async def _invoke(self, client: AsyncClient, item: BatchItem, start: float) -> Any:
        """The item's invocation. While the token endpoint cannot be reached (nothing was sent
        to the service, so a retry cannot duplicate work) it waits and tries again, with
        backoff, within the item's timeout. An untrusted TLS certificate (service or token
        endpoint) is raised as `CertificateVerificationError`: it stops the batch."""
        cfg = self.config
        known = self.resume.runs.get(item.custom_id) if cfg.retry_failed else None
        if known is not None:
            # Follow the run the item already has: never start a second run while it may
            # still finish.
            followed = await self._follow(client, item, *known)
            if followed is not None:
                return followed
        budget = cfg.timeout if cfg.timeout is not None else _TOKEN_WAIT_DEFAULT
        attempt = 0
        while True:
            try:
                return await chat(
                    client,
                    model=item.model,
                    messages=item.messages,
                    thread_id=item.thread_id,
                    instructions=item.instructions,
                    timeout=cfg.timeout,
                    mode=cfg.mode,
                    drop_params=cfg.drop_params,
                    metadata=dict(item.metadata),
                    **item.params,
                )
            except APIConnectionError as exc:
                if is_certificate_failure(exc):
                    if isinstance(exc, CertificateVerificationError):
                        raise
                    raise CertificateVerificationError(
                        exc.message, thread_id=exc.thread_id, run_id=exc.run_id
                    ) from exc
                if not exc.token_endpoint:
                    raise
                delay = min(2.0**attempt, 30.0) * (0.5 + self._rng.random() / 2)
                if anyio.current_time() - start + delay > budget:
                    raise
                attempt += 1
                self.token_waits += 1
                if attempt == 1:
                    logger.warning("%s; waiting and trying again", exc.message)
                await anyio.sleep(delay)

    async def _one(
        self,
        client: AsyncClient,
        out: OutputWriter,
        stop: anyio.CancelScope,
        index: int,
        item: BatchItem,
    ) -> None:
        if self._fatal is not None:
            return
        self.progress.started += 1
        start = anyio.current_time()
        item_span = _otel.job_span(
            "agentrun.batch.item",
            {"agentrun.batch.custom_id": item.custom_id or "", "agentrun.batch.line": item.line},
            tracer_provider=client._telemetry.tracer_provider,
        )
        try:
            with item_span:
                resp = await self._invoke(client, item, start)
        except (
            AuthenticationError,
            PermissionDeniedError,
            CertificateVerificationError,
        ) as exc:
            # Every other item would fail the same way: stop, and write no line for it.
            if self._fatal is None:
                self._fatal = exc
            stop.cancel()
            return
        except Exception as exc:
            elapsed = anyio.current_time() - start
            if not self._write(out, error_line(item, exc, elapsed), stop):
                return
            kind, code = error_kind(exc)
            self._failures[f"{kind}: {code}"] += 1
            self._record_history(getattr(exc, "history", ()), elapsed, None)
            self.progress.note_finished(False)
            return
        assert isinstance(resp, ChatCompletion)
        elapsed = anyio.current_time() - start
        if not self._write(out, success_line(item, resp, elapsed), stop):
            return
        result = resp.run_result
        if result is not None:
            self._record_history(result.history, elapsed, result.requests)
            if result.usage is not None:
                self._tokens[0] += result.usage.prompt_tokens
                self._tokens[1] += result.usage.completion_tokens
                self._tokens[2] += result.usage.total_tokens
        self.progress.note_finished(True)

    async def _follow(
        self, client: AsyncClient, item: BatchItem, thread_id: str, run_id: str
    ) -> ChatCompletion | None:
        """The reply of the run an earlier attempt left behind, or None when that run ended
        without one (then the item runs again). Other errors (the service unreachable, the
        deadline) are the item's error, and its line names the same run again."""
        try:
            result = await client.run(
                parse_model(item.model),
                thread_id=thread_id,
                run_id=run_id,
                timeout=self.config.timeout,
            )
        except RunIncompleteError as exc:
            if not isinstance(exc.result, RunResult):
                return None
            result = exc.result
        except RunError:
            return None
        return completion_from_result(result, item.model)

    def _write(self, out: OutputWriter, line: dict[str, Any], stop: anyio.CancelScope) -> bool:
        """Write a line; a write error (disk full, ...) stops the batch."""
        try:
            out.write(line)
        except OSError as exc:
            if self._fatal is None:
                self._fatal = exc
            stop.cancel()
            return False
        return True

    def _record_history(self, history: Any, elapsed: float, requests: int | None) -> None:
        for state, seconds in _durations(history).items():
            res = self._states.get(state)
            if res is None:
                res = self._states[state] = _Reservoir(_SAMPLES, self._rng)
            res.add(seconds)
        self._total_time.add(elapsed)
        if requests is not None:
            self._measured += 1
            self._requests += requests
            self._requests_max = max(self._requests_max, requests)

    # -- the end -----------------------------------------------------------------------------

    def summary(self) -> BatchSummary:
        """The summary so far (complete once `run` returned)."""
        p = self.progress
        order = [s.value for s in State]
        states: dict[str, dict[str, float]] = {}
        for name in sorted(self._states, key=lambda s: order.index(s) if s in order else 99):
            values = self._states[name].values
            states[name] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
        if self._total_time.values:
            values = self._total_time.values
            states["total"] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
        http = token = 0
        if self._client is not None:
            stats = self._client.statistics()
            http, token = stats.requests_sent, stats.token_requests
        return BatchSummary(
            total=p.total,
            ran=p.done,
            completed=p.completed,
            failed=p.failed,
            skipped_ok=p.skipped_ok,
            skipped_failed=p.skipped_failed,
            elapsed=p.elapsed,
            interrupted=p.interrupted,
            failures=dict(self._failures.most_common()),
            state_times=states,
            runs_measured=self._measured,
            requests_per_run=self._requests / self._measured if self._measured else 0.0,
            requests_max=self._requests_max,
            http_requests=http,
            token_requests=token,
            prompt_tokens=self._tokens[0],
            completion_tokens=self._tokens[1],
            total_tokens=self._tokens[2],
            output_lines=self._output_lines,
        )
