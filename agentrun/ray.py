"""agentrun batches on Ray Data: the same requests and result lines as `agentrun batch`, on a
local Ray or on a cluster (install with ``pip install 'agentrun[ray]'``).

* `ClientSettings`: a picklable, frozen description of a client; every actor builds its own
  `AsyncClient` from it (a live client is never pickled). Secrets stay out of its repr.
* `BatchMapper`: the async callable class `Dataset.map_batches` runs on an actor pool. One
  `AsyncClient` per actor, built on the actor's event loop at its first batch and closed when
  the actor ends; at most `max_in_flight` invocations at once per actor, shared by every block
  the actor works on (several at once), paced by the actor's share of the job's rate budget.
  A row's failure is a row (error columns), never an exception that aborts the job.
* `map_requests(ds, client)`: Dataset of requests -> Dataset of results (`RESULT_SCHEMA`).
* `run_job(input_path, output_dir, client)`: read JSONL or Parquet, map, write JSONL or
  Parquet parts; a rerun skips every row whose result was written (an anti-join on
  `custom_id` against the output directory), so a crashed job resumes where it stopped.
* `run_batch(runner, client)`: what `agentrun batch --ray` runs: the batch's own input file,
  output file (appended, one flushed line per result), resume and progress.

Input rows are the lines of `agentrun batch` (see docs/batch.md): either a ``text`` column
holding one JSON line (as `ray.data.read_text` gives), or the request fields as columns
(``custom_id``, ``messages`` or ``prompt``, ``model``, ``thread_id``, ``instructions``,
``metadata``, OpenAI parameters), with an optional integer ``line`` column. Each is parsed by
`agentrun._batch.parse_line`, and each result's ``record`` column is the batch's output line
(`success_line`, `error_line`, `input_error_line`), so both commands write the same file
format and either can resume the other's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import pathlib
import ssl
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import anyio
import attrs

try:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy
    from ray.data.datasource import BlockBasedFileDatasink
except ImportError as _exc:  # pragma: no cover - depends on the installation
    raise ImportError("agentrun.ray needs Ray Data: pip install 'agentrun[ray]'") from _exc

# Ray 2.60's DataContext() warns about its own default `use_push_based_shuffle` field when
# it is first created; create it here, quietly, so `python -W error` can use this module.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    ray.data.DataContext.get_current()

from agentrun._batch import (
    BatchItem,
    BatchRunner,
    BatchSummary,
    InputError,
    OutputWriter,
    ResumeState,
    _Reservoir,
    error_line,
    input_error_line,
    parse_line,
    read_output,
    success_line,
)
from agentrun._client import AsyncClient, Mode
from agentrun._credentials import environment
from agentrun._errors import ConfigurationError, RunError
from agentrun._machine import State
from agentrun._openai import ChatCompletion, chat
from agentrun._results import percentile
from agentrun._retry import RetryPolicy
from agentrun._settings import ConnectionSettings

__all__ = [
    "RESULT_SCHEMA",
    "BatchMapper",
    "ClientSettings",
    "JobSummary",
    "init_local",
    "map_requests",
    "read_requests",
    "run_batch",
    "run_job",
]

#: The columns of a result row. ``record`` is the `agentrun batch` output line (JSON text);
#: the other columns repeat parts of it for queries. ``error_type``/``error_code`` are null
#: for a success; ``requests`` is the HTTP requests the run cost (retries included).
RESULT_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("line", pa.int64()),
        ("reply", pa.string()),
        ("status_code", pa.int64()),
        ("request_id", pa.string()),
        ("thread_id", pa.string()),
        ("run_id", pa.string()),
        ("error_type", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("requests", pa.int64()),
        ("seconds", pa.float64()),
        ("timings", pa.string()),
        ("record", pa.string()),
    ]
)

_ENV_NAMES = (
    "AZURE_AI_API_BASE",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_AUTHORITY_HOST",
    "AZURE_AD_TOKEN",
)
_MODES = ("auto", "stream", "poll")
_CLOSE_TIMEOUT = 30.0
#: Longest pause of new invocations after the service answered 429.
_MAX_BACKOFF = 30.0


# -- settings ---------------------------------------------------------------------------------


@attrs.frozen
class ClientSettings:
    """How an actor builds its `AsyncClient`: the keyword arguments of `AsyncClient`, as
    plain picklable values (`verify` is a bool or a CA bundle path, not an `SSLContext`).

    Credentials left None are resolved on the actor, from its environment, in the client's
    order (see `AsyncClient`); `from_environment()` captures the driver's instead, so that
    actors on other machines use the same. `api_key`, `client_secret` and `env` are kept out
    of the repr. Raises `ConfigurationError` for a bad `mode`, `pool_limit` or `timeout`.
    """

    api_base: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    authority: str | None = None
    api_version: str = "v1"
    verify: bool | str = True
    pool_limit: int = 100
    mode: Mode = "auto"
    timeout: float | None = 600.0
    retry_policy: RetryPolicy | None = None
    env: Mapping[str, str] | None = attrs.field(default=None, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if self.pool_limit < 1:
            raise ConfigurationError("pool_limit must be at least 1")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigurationError("timeout must be a positive number of seconds or None")

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **kwargs: Any
    ) -> ClientSettings:
        """Settings that carry this process's ``AZURE_AI_API_BASE``, ``AZURE_TENANT_ID``,
        ``AZURE_CLIENT_ID``, ``AZURE_CLIENT_SECRET``, ``AZURE_AUTHORITY_HOST`` and
        ``AZURE_AD_TOKEN`` (from `environ`, default `os.environ`) to the actors; `kwargs`
        are the other fields."""
        found = environment(environ)
        env = {name: found[name] for name in _ENV_NAMES if name in found}
        return cls(env=env, **kwargs)

    @classmethod
    def from_settings(
        cls,
        settings: ConnectionSettings,
        *,
        mode: Mode = "auto",
        timeout: float | None = 600.0,
    ) -> ClientSettings:
        """The picklable form of `settings` (which must hold no `credential` object nor
        `ssl.SSLContext`: actors build their own), with the client's `mode` and `timeout`.
        Its environment snapshot travels too. Raises `ConfigurationError` otherwise."""
        if settings.credential is not None or isinstance(settings.verify, ssl.SSLContext):
            raise ConfigurationError(
                "ClientSettings carry plain values to Ray actors: use api_key or a service "
                "principal instead of credential=, and a CA bundle path instead of an SSLContext"
            )
        return cls(
            api_base=settings.api_base,
            api_key=settings.api_key,
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            authority=settings.authority,
            api_version=settings.api_version,
            verify=settings.verify,
            pool_limit=settings.pool_limit,
            mode=mode,
            timeout=timeout,
            retry_policy=settings.retry_policy,
            env=settings.environ,
        )

    def connection_settings(self) -> ConnectionSettings:
        """The `ConnectionSettings` these describe, resolved where this is called (on an
        actor: from its environment, unless `env` carries the driver's). Raises
        `ConfigurationError` for a bad api_base or missing credentials."""
        return ConnectionSettings(
            api_base=self.api_base,
            api_key=self.api_key,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            authority=self.authority,
            api_version=self.api_version,
            verify=self.verify,
            pool_limit=self.pool_limit,
            retry_policy=self.retry_policy,
            env=self.env,
        )

    def build(self) -> AsyncClient:
        """A new `AsyncClient` (call it on the event loop that will use it; close it)."""
        return AsyncClient(
            settings=self.connection_settings(), mode=self.mode, timeout=self.timeout
        )

    def check(self) -> None:
        """Build a client and close it, so that missing settings or credentials raise
        `ConfigurationError` here instead of on every row. No network."""

        async def probe() -> None:
            await self.build().aclose()

        # On a thread of its own: the caller may be inside an event loop (a notebook cell).
        errors: list[BaseException] = []

        def target() -> None:
            try:
                anyio.run(probe, backend="asyncio")
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, name="agentrun-settings-check")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]


# -- the actor --------------------------------------------------------------------------------


class _Pacer:
    """Start times for one actor: at most `per_minute` invocations a minute (None: no cap),
    a token budget of `tokens_per_minute` (debited by each run's usage), and a pause that
    doubles while the service keeps answering 429 (1 s, 2 s, ... 30 s). A 429 also halves the
    request rate, which then climbs back by 5% of the cap per invocation without a 429."""

    def __init__(self, per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.cap = per_minute / 60.0 if per_minute else None
        self.rate = self.cap
        self.tokens_rate = tokens_per_minute / 60.0 if tokens_per_minute else None
        self.tokens = tokens_per_minute or 0.0
        self._tokens_max = tokens_per_minute or 0.0
        self._tokens_at = time.monotonic()
        self._next = 0.0
        self._paused_until = 0.0
        self._backoff = 1.0

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            delay = max(0.0, self._paused_until - now)
            if self.tokens_rate is not None:
                self._refill(now)
                if self.tokens < 0:
                    delay = max(delay, -self.tokens / self.tokens_rate)
            if delay <= 0:
                break
            await anyio.sleep(delay)
        if self.rate is not None:
            now = time.monotonic()
            at = max(self._next, now)
            self._next = at + 1.0 / self.rate
            if at > now:
                await anyio.sleep(at - now)

    def _refill(self, now: float) -> None:
        assert self.tokens_rate is not None
        self.tokens = min(
            self._tokens_max, self.tokens + (now - self._tokens_at) * self.tokens_rate
        )
        self._tokens_at = now

    def spent(self, tokens: int) -> None:
        if self.tokens_rate is not None:
            self._refill(time.monotonic())
            self.tokens -= tokens

    def throttled(self) -> None:
        """The service answered 429 (or a run failed with rate_limit_exceeded)."""
        self._paused_until = max(self._paused_until, time.monotonic() + self._backoff)
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        if self.rate is not None and self.cap is not None:
            self.rate = max(self.rate / 2, self.cap / 64)

    def fine(self) -> None:
        self._backoff = 1.0
        if self.rate is not None and self.cap is not None:
            self.rate = min(self.cap, self.rate + self.cap * 0.05)


class BatchMapper:
    """The async callable class for `Dataset.map_batches` (pyarrow batches in and out).

    Ray builds one per actor. Its first batch builds the actor's one `AsyncClient` (pool and
    token cache shared by every row of the actor) on the actor's event loop; `close()` (also
    run by ``__del__`` when Ray shuts the actor down gracefully) closes it. Every batch the
    actor works on, from any number of blocks at once, shares one limit of `max_in_flight`
    invocations and one `_Pacer` (`requests_per_minute` / `tokens_per_minute` are this
    actor's share). Rows whose ``custom_id`` is in `skip` (or, without one, whose ``line`` is
    in `skip_lines`) are dropped without a request: that is the resume anti-join.

    Returns a table with `RESULT_SCHEMA`, one row per input row not skipped. A failed
    invocation becomes a row with the error columns set (the batch's `error_line`); only a
    bug in agentrun raises.
    """

    def __init__(
        self,
        client: ClientSettings,
        *,
        default_model: str | None = None,
        max_in_flight: int = 100,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        timeout: float | None = None,
        mode: Mode | None = None,
        drop_params: bool = False,
        skip: frozenset[str] = frozenset(),
        skip_lines: frozenset[int] = frozenset(),
        skip_errors: frozenset[str] = frozenset(),
    ) -> None:
        if max_in_flight < 1:
            raise ConfigurationError("max_in_flight must be at least 1")
        self.settings = client
        self.default_model = default_model
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.mode = mode
        self.drop_params = drop_params
        self.skip = skip
        self.skip_lines = skip_lines
        self.skip_errors = skip_errors
        self._pacer = _Pacer(requests_per_minute, tokens_per_minute)
        self._client: AsyncClient | None = None
        self._limit: anyio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen_429 = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<BatchMapper {self.settings!r} max_in_flight={self.max_in_flight}>"

    async def __call__(self, batch: pa.Table) -> pa.Table:
        if isinstance(batch, Mapping):  # a caller that did not ask for batch_format="pyarrow"
            batch = pa.table(dict(batch))
        client = self._ensure_client()
        rows = batch.to_pylist()
        records: list[dict[str, Any] | None] = [None] * len(rows)
        async with anyio.create_task_group() as tg:
            for i, row in enumerate(rows):
                entry, known_line = _entry(row, self.default_model)
                if isinstance(entry, InputError):
                    key = _error_key(row) if not known_line and entry.custom_id is None else None
                    if key in self.skip_errors or self._skipped(entry):
                        continue
                    record = _line_fix(input_error_line(entry), known_line)
                    if key is not None:
                        record["id"] = key
                    records[i] = record
                    continue
                if self._skipped(entry):
                    continue
                tg.start_soon(self._one, client, entry, known_line, records, i)
        return _table(r for r in records if r is not None)

    def _ensure_client(self) -> AsyncClient:
        if self._closed:
            raise RuntimeError("this BatchMapper is closed")
        if self._client is None:
            self._loop = asyncio.get_running_loop()
            self._limit = anyio.Semaphore(self.max_in_flight)
            self._client = self.settings.build()
        return self._client

    def _skipped(self, entry: BatchItem | InputError) -> bool:
        if entry.custom_id is not None:
            return entry.custom_id in self.skip
        return entry.line in self.skip_lines

    async def _one(
        self,
        client: AsyncClient,
        item: BatchItem,
        known_line: bool,
        records: list[dict[str, Any] | None],
        index: int,
    ) -> None:
        assert self._limit is not None
        async with self._limit:
            await self._pacer.wait()
            start = anyio.current_time()
            try:
                resp = await chat(
                    client,
                    model=item.model,
                    messages=item.messages,
                    thread_id=item.thread_id,
                    instructions=item.instructions,
                    timeout=self.timeout,
                    mode=self.mode,
                    drop_params=self.drop_params,
                    metadata=dict(item.metadata),
                    **item.params,
                )
            except Exception as exc:  # a row's failure is data
                records[index] = _line_fix(
                    error_line(item, exc, anyio.current_time() - start), known_line
                )
                limited = isinstance(exc, RunError) and exc.code == "rate_limit_exceeded"
                self._after(client, limited)
                return
            assert isinstance(resp, ChatCompletion)
            records[index] = _line_fix(
                success_line(item, resp, anyio.current_time() - start), known_line
            )
            result = resp.run_result
            if result is not None and result.usage is not None:
                self._pacer.spent(result.usage.total_tokens)
            self._after(client, False)

    def _after(self, client: AsyncClient, limited: bool) -> None:
        seen = client._transport.statistics().responses_by_status.get(429, 0)
        if limited or seen > self._seen_429:
            self._pacer.throttled()
        else:
            self._pacer.fine()
        self._seen_429 = seen

    def close(self) -> None:
        """Close the actor's client (waits up to 30 s). Safe to call more than once."""
        self._closed = True
        client, loop, self._client = self._client, self._loop, None
        if client is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(client.aclose())
        elif loop.is_running():
            future = asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            with contextlib.suppress(Exception):
                future.result(_CLOSE_TIMEOUT)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _entry(
    row: Mapping[str, Any], default_model: str | None
) -> tuple[BatchItem | InputError, bool]:
    """Parse one input row with the batch's `parse_line`; (entry, whether its line is known)."""
    raw_line = row.get("line")
    known = isinstance(raw_line, int) and not isinstance(raw_line, bool)
    line = raw_line if isinstance(raw_line, int) and known else 0
    text = row.get("text")
    if isinstance(text, str) and row.get("custom_id") is None:
        return parse_line(text, line, default_model), known
    fields = {k: _plain(v) for k, v in row.items() if v is not None and k not in ("line", "text")}
    return parse_line(json.dumps(fields, default=str), line, default_model), known


def _error_key(row: Mapping[str, Any]) -> str:
    """The ``id`` of a malformed row with neither custom_id nor line number: derived from its
    content, so that a resume can find it in the output."""
    text = row.get("text")
    if not isinstance(text, str):
        text = json.dumps(row, sort_keys=True, default=str)
    return "batch_req_" + hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:24]


def _plain(value: Any) -> Any:
    """Arrow's Python values as JSON: a map column's list of pairs becomes an object, and
    struct fields that are null (absent in that row) are dropped."""
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def _line_fix(record: dict[str, Any], known_line: bool) -> dict[str, Any]:
    """Without a ``line`` column there is no line number: null, and no "line 0: " prefix."""
    if known_line:
        return record
    record["line"] = None
    error = record.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] = error["message"].removeprefix("line 0: ")
    return record


def _columns(record: Mapping[str, Any]) -> dict[str, Any]:
    response = record.get("response") or {}
    body = response.get("body") if isinstance(response, dict) else None
    body = body if isinstance(body, dict) else {}
    usage_value = body.get("usage")
    usage: dict[str, Any] = usage_value if isinstance(usage_value, dict) else {}
    reply = None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            reply = message["content"]
    error_value = record.get("error")
    error: dict[str, Any] = error_value if isinstance(error_value, dict) else {}
    timings = record.get("timings")
    return {
        "custom_id": record.get("custom_id"),
        "line": record.get("line"),
        "reply": reply,
        "status_code": response.get("status_code") if isinstance(response, dict) else None,
        "request_id": response.get("request_id") if isinstance(response, dict) else None,
        "thread_id": record.get("thread_id"),
        "run_id": record.get("run_id"),
        "error_type": error.get("type"),
        "error_code": error.get("code"),
        "error_message": error.get("message"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
        "requests": record.get("requests"),
        "seconds": timings.get("total") if isinstance(timings, dict) else None,
        "timings": json.dumps(timings) if timings is not None else None,
        "record": json.dumps(record, ensure_ascii=False, separators=(",", ":")),
    }


def _table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([_columns(r) for r in records], schema=RESULT_SCHEMA)


# -- datasets ---------------------------------------------------------------------------------


def init_local(temp_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
    """Start a local Ray for agentrun: at least 4 logical CPUs (a resume on 2 can deadlock in
    Ray 2.x: the read, the actors and the write wait on each other), no dashboard, and the
    session files under `temp_dir` (absolute; Ray's default is /tmp/ray). `kwargs` go to
    `ray.init`."""
    options: dict[str, Any] = {
        "num_cpus": max(4, os.cpu_count() or 1),
        "include_dashboard": False,
        "configure_logging": False,
        "log_to_driver": False,
    }
    if temp_dir is not None:
        options["_temp_dir"] = str(pathlib.Path(temp_dir).resolve())
    options.update(kwargs)
    ray.init(**options)


def read_requests(
    path: str | os.PathLike[str] | list[str], *, rows_per_block: int = 1000
) -> ray.data.Dataset:
    """A Dataset of requests from JSONL files (one ``text`` row per non-blank line, parsed
    later by the actors, so a malformed line becomes an error row) or Parquet files (a path
    ending in ``.parquet``, or a directory holding ``.parquet`` files: the request fields as
    columns), cut into blocks of at most `rows_per_block` rows.

    The cut matters: one block goes to one actor and its results are written together, and
    Ray's readers give one block per small file (a small Parquet file, or a JSONL file, may
    be a single block: one actor busy, nothing written until the end).
    """
    if rows_per_block < 1:
        raise ConfigurationError("rows_per_block must be at least 1")
    paths = [_location(p)[2] for p in (path if isinstance(path, list) else [path])]
    if all(_is_parquet(p) for p in paths):
        ds = ray.data.read_parquet(paths)
    else:
        ds = ray.data.read_text(paths)
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def _is_parquet(path: str) -> bool:
    if path.endswith(".parquet"):
        return True
    fs, on_fs, _ = _location(path)
    if fs.get_file_info(on_fs).type != pafs.FileType.Directory:
        return False
    infos = fs.get_file_info(pafs.FileSelector(on_fs))
    return any(i.base_name.endswith(".parquet") for i in infos)


def map_requests(
    ds: ray.data.Dataset,
    client: ClientSettings,
    *,
    actors: int = 2,
    max_in_flight: int = 100,
    blocks_per_actor: int = 4,
    batch_size: int | None = None,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    default_model: str | None = None,
    timeout: float | None = None,
    mode: Mode | None = None,
    drop_params: bool = False,
    num_cpus: float = 1.0,
    skip: Iterable[str] = (),
    skip_lines: Iterable[int] = (),
    skip_errors: Iterable[str] = (),
) -> ray.data.Dataset:
    """Requests -> results (`RESULT_SCHEMA`) on a pool of `actors` `BatchMapper` actors.

    Each actor keeps up to `max_in_flight` invocations in flight (so the job up to
    ``actors * max_in_flight``) over up to `blocks_per_actor` blocks at once, in batches of
    `batch_size` rows (default ``ceil(max_in_flight / blocks_per_actor)``).
    `requests_per_minute` and `tokens_per_minute` are the whole job's budget, split evenly
    across the actors. `skip` / `skip_lines` / `skip_errors`: custom_ids / line numbers /
    ids of malformed rows without either (see `run_job`) not to run again.
    Raises `ConfigurationError` for a bad size.
    """
    if actors < 1 or blocks_per_actor < 1 or max_in_flight < 1:
        raise ConfigurationError("actors, max_in_flight and blocks_per_actor must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    for name, value in (("requests_per_minute", requests_per_minute),
                        ("tokens_per_minute", tokens_per_minute)):  # fmt: skip
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{name} must be a positive number")
    size = batch_size or max(1, math.ceil(max_in_flight / blocks_per_actor))
    return ds.map_batches(
        BatchMapper,
        batch_size=size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            size=actors,
            max_tasks_in_flight_per_actor=blocks_per_actor,
            max_concurrent_calls_per_actor=blocks_per_actor,
        ),
        num_cpus=num_cpus,
        fn_constructor_kwargs={
            "client": client,
            "default_model": default_model,
            "max_in_flight": max_in_flight,
            "requests_per_minute": requests_per_minute / actors if requests_per_minute else None,
            "tokens_per_minute": tokens_per_minute / actors if tokens_per_minute else None,
            "timeout": timeout,
            "mode": mode,
            "drop_params": drop_params,
            "skip": frozenset(skip),
            "skip_lines": frozenset(skip_lines),
            "skip_errors": frozenset(skip_errors),
        },
    )


# -- the one-call job -------------------------------------------------------------------------


class _JsonlDatasink(BlockBasedFileDatasink):
    """Writes each block's ``record`` column as `agentrun batch` output lines, one file a
    write task (``*.jsonl``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, file_format="jsonl")

    def write_block_to_file(self, block: Any, file: Any) -> None:
        records = block.to_arrow().column("record").to_pylist()
        file.write("".join(r + "\n" for r in records).encode("utf-8"))


@attrs.frozen
class JobSummary:
    """What `run_job` did: `skipped` results were in the output before (their rows were not
    sent),
    `written` result rows were added now (`completed` + `failed`), in `elapsed` seconds;
    `torn` files left by a crash were repaired (JSONL: torn last line cut) or set aside
    (Parquet: renamed ``*.torn``)."""

    output_dir: str
    skipped: int
    written: int
    completed: int
    failed: int
    torn: int
    elapsed: float


@attrs.define
class _Done:
    state: ResumeState
    files: dict[str, tuple[int, int, int]]  # name -> (lines, succeeded, failed)
    errors: set[str] = attrs.field(factory=set)  # ids of malformed rows without custom_id
    torn: int = 0


def _location(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path on it, the path to give Ray): a local path made absolute, or a URI
    (s3://, abfss://, gs://, ...) as pyarrow resolves it."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        fs, on_fs = pafs.FileSystem.from_uri(text)
        return fs, on_fs.rstrip("/"), text
    local = str(pathlib.Path(text.removeprefix("file://")).resolve())
    return pafs.LocalFileSystem(), local, local


def _read_done(fs: pafs.FileSystem, output_dir: str, fmt: str) -> _Done:
    """What the output directory holds. Local JSONL parts torn by a crash are cut back to
    their last whole line (on object stores a part appears whole or not at all)."""
    done = _Done(ResumeState(), {})
    infos = fs.get_file_info(pafs.FileSelector(output_dir, allow_not_found=True))
    local = isinstance(fs, pafs.LocalFileSystem)
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        name = info.base_name
        if fmt == "jsonl" and name.endswith(".jsonl"):
            if local:
                part, errors = read_output(info.path, repair=True), list(_error_ids(info.path))
            else:
                part, errors = _read_remote_jsonl(fs, info.path)
            if part.torn_bytes:
                done.torn += 1
            done.files[name] = (part.lines, len(part.succeeded), part.lines - len(part.succeeded))
            for cid in part.succeeded:
                state = done.state
                state.succeeded.add(cid)
                state.failed.discard(cid)
            done.state.failed.update(part.failed - done.state.succeeded)
            done.state.failed_lines.update(part.failed_lines)
            done.state.lines += part.lines
            done.errors.update(errors)
        elif fmt == "parquet" and name.endswith(".parquet"):
            _read_parquet_part(fs, info.path, name, done)
    return done


def _read_remote_jsonl(fs: pafs.FileSystem, path: str) -> tuple[ResumeState, list[str]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="agentrun-resume-") as tmp:
        copy = pathlib.Path(tmp) / "part.jsonl"
        with fs.open_input_stream(path) as src, open(copy, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return read_output(copy, repair=False), list(_error_ids(str(copy)))


def _read_parquet_part(fs: pafs.FileSystem, path: str, name: str, done: _Done) -> None:
    state = done.state
    try:
        table = pq.read_table(path, filesystem=fs, columns=["custom_id", "error_type", "line"])
    except (OSError, pa.ArrowException):
        fs.move(path, path + ".torn")
        done.torn += 1
        return
    ok = failed = 0
    records: list[Any] = []
    for i, (cid, err, line) in enumerate(
        zip(
            table.column("custom_id").to_pylist(),
            table.column("error_type").to_pylist(),
            table.column("line").to_pylist(),
            strict=True,
        )
    ):
        if cid is None:
            if line is not None:
                state.failed_lines.add(line)
            else:
                if not records:
                    whole = pq.read_table(path, filesystem=fs, columns=["record"])
                    records = whole.column(0).to_pylist()
                done.errors.add(json.loads(records[i])["id"])
            failed += 1
        elif err is None:
            ok += 1
            state.succeeded.add(cid)
            state.failed.discard(cid)
        else:
            failed += 1
            if cid not in state.succeeded:
                state.failed.add(cid)
    done.files[name] = (table.num_rows, ok, failed)
    state.lines += table.num_rows


def _error_ids(path: str) -> Iterator[str]:
    with open(path, "rb") as f:
        for raw in f:
            if b'"custom_id":null' in raw and b'"line":null' in raw:
                with contextlib.suppress(ValueError):
                    obj = json.loads(raw)
                    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                        yield obj["id"]


def run_job(
    input_path: str | os.PathLike[str] | list[str],
    output_dir: str | os.PathLike[str],
    client: ClientSettings,
    *,
    output_format: Literal["jsonl", "parquet"] = "jsonl",
    retry_failed: bool = False,
    address: str | None = None,
    rows_per_block: int = 1000,
    **options: Any,
) -> JobSummary:
    """Read requests (`read_requests`, in blocks of `rows_per_block` rows: the unit of work
    of an actor and of writing), run them (`map_requests`; `options` are its keyword
    arguments), and write the results to `output_dir` as ``*.jsonl`` parts holding the
    `agentrun batch` output lines, or as ``*.parquet`` parts with `RESULT_SCHEMA`.

    Resume: the output directory is read first (a torn JSONL line left by a crash is cut
    off, an unreadable Parquet part is set aside), and every row whose ``custom_id`` has a
    result there is skipped without a request: failed ones too, unless `retry_failed`. A row
    in flight when the job died had no result written and runs again (at-least-once: its
    first run may have finished on the service; its ``metadata.custom_id`` finds it).

    Ray: uses the running Ray if there is one, else connects to `address` (``"auto"``,
    ``"ray://host:10001"``), else starts a local one (`init_local`) and shuts it down after.
    `output_dir` must be a directory every node can write (a local path for a local Ray).
    Raises `ConfigurationError` for bad settings before any row is sent; the input may not
    contain a custom_id twice (each copy would run).
    """
    if output_format not in ("jsonl", "parquet"):
        raise ConfigurationError(f"output_format must be jsonl or parquet, got {output_format!r}")
    client.check()
    fs, out, out_for_ray = _location(output_dir)
    inputs = input_path if isinstance(input_path, list) else [input_path]
    if any(_location(p)[1:] == (out, out_for_ray) for p in inputs):
        raise ConfigurationError("the output directory must not be the input")
    before = _read_done(fs, out, output_format)
    state = before.state
    skip = state.succeeded if retry_failed else state.succeeded | state.failed
    skip_lines = frozenset() if retry_failed else frozenset(state.failed_lines)
    skip_errors = frozenset() if retry_failed else frozenset(before.errors)
    own = not ray.is_initialized()
    if own:
        if address is None:
            init_local()
        else:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
    started = time.monotonic()
    try:
        ds = read_requests(input_path, rows_per_block=rows_per_block)
        results = map_requests(
            ds, client, skip=skip, skip_lines=skip_lines, skip_errors=skip_errors, **options
        )
        if output_format == "jsonl":
            results.write_datasink(_JsonlDatasink(out_for_ray))
        else:
            results.write_parquet(out_for_ray)
    finally:
        if own:
            ray.shutdown()
    after = _read_done(fs, out, output_format)
    new = [v for k, v in after.files.items() if k not in before.files]
    return JobSummary(
        output_dir=out_for_ray,
        skipped=len(skip) + len(skip_lines) + len(skip_errors),
        written=sum(v[0] for v in new),
        completed=sum(v[1] for v in new),
        failed=sum(v[2] for v in new),
        torn=before.torn,
        elapsed=time.monotonic() - started,
    )


# -- `agentrun batch --ray` -------------------------------------------------------------------


def _input_rows(runner: BatchRunner) -> Iterator[BatchItem | InputError | dict[str, Any]]:
    """The input lines to run, as the batch decides: `InputError`s (the driver writes their
    lines) and ``{"line", "text"}`` rows for the actors."""
    cfg = runner.config
    seen: set[str] = set()
    with open(cfg.input_path, encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            entry = parse_line(text, number, cfg.default_model)
            if entry.custom_id is not None:
                if entry.custom_id in seen:
                    continue
                seen.add(entry.custom_id)
            if runner._decide(entry) != "run":
                continue
            yield entry if isinstance(entry, InputError) else {"line": number, "text": text}


class _Tally:
    """The batch's summary statistics, from output lines."""

    def __init__(self) -> None:
        import random

        rng = random.Random(0)
        self.rng = rng
        self.states: dict[str, _Reservoir] = {}
        self.total = _Reservoir(50_000, rng)
        self.failures: Counter[str] = Counter()
        self.requests = 0
        self.requests_max = 0
        self.measured = 0
        self.tokens = [0, 0, 0]

    def add(self, record: Mapping[str, Any]) -> bool:
        error = record.get("error")
        timings = record.get("timings")
        if isinstance(timings, dict):
            for state, seconds in timings.items():
                if state == "total":
                    self.total.add(seconds)
                else:
                    self.states.setdefault(state, _Reservoir(50_000, self.rng)).add(seconds)
        if isinstance(error, dict):
            self.failures[f"{error.get('type')}: {error.get('code')}"] += 1
            return False
        requests = record.get("requests")
        if isinstance(requests, int):
            self.measured += 1
            self.requests += requests
            self.requests_max = max(self.requests_max, requests)
        cols = _columns(record)
        for i, key in enumerate(("prompt_tokens", "completion_tokens", "total_tokens")):
            self.tokens[i] += cols[key] or 0
        return True

    def state_times(self) -> dict[str, dict[str, float]]:
        order = [s.value for s in State]
        out: dict[str, dict[str, float]] = {}
        for name in sorted(self.states, key=lambda s: order.index(s) if s in order else 99):
            values = self.states[name].values
            out[name] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
        if self.total.values:
            values = self.total.values
            out["total"] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
        return out


def run_batch(
    runner: BatchRunner,
    client: ClientSettings,
    *,
    address: str | None = None,
    actors: int = 2,
    on_progress: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> BatchSummary:
    """`agentrun batch --ray`: run `runner`'s batch (its config: input, output file,
    concurrency, timeout, mode, retry_failed, drop_params) on Ray and return its summary.

    The driver reads the input and the output file exactly as `agentrun batch` does
    (`runner.prepare()` first: resume state, duplicate custom_ids), writes the malformed
    lines' error lines itself, sends the other lines to `actors` actors (the config's
    `concurrency` is split across them), and appends each result line to the output file as
    it comes back (flushed per line), updating `runner.progress`; `on_progress` is called
    after each batch of results. Setting `stop`, or Ctrl-C (KeyboardInterrupt), ends the job
    early: the summary says interrupted, rows in flight get no line and run again on the next
    resume (their runs are not cancelled on the service: the actors are stopped with Ray). Ray as in
    `run_job` (`address`; a local Ray under `temp_dir`). `options` go to `map_requests`.
    """
    if not runner._prepared:
        runner.prepare()
    cfg = runner.config
    progress = runner.progress
    tally = _Tally()
    progress.started_at = time.monotonic()
    rows: list[dict[str, Any]] = []
    lines_written = 0
    try:
        with OutputWriter(
            cfg.output_path, sync_interval=cfg.sync_interval, sync_lines=cfg.sync_lines
        ) as out:
            try:
                for entry in _input_rows(runner):
                    if isinstance(entry, InputError):
                        progress.started += 1
                        out.write(input_error_line(entry))
                        tally.failures["InputError: invalid_input_line"] += 1
                        progress.note_finished(False)
                    elif isinstance(entry, dict):
                        rows.append(entry)
                if rows and not (stop is not None and stop.is_set()):
                    progress.started += len(rows)
                    _run_rows(runner, client, rows, out, tally, address, actors, temp_dir,
                              on_progress, stop, options)  # fmt: skip
            finally:
                lines_written = out.lines
    finally:
        progress.finished_at = time.monotonic()
    if stop is not None and stop.is_set():
        progress.interrupted = True
    return BatchSummary(
        total=progress.total,
        ran=progress.done,
        completed=progress.completed,
        failed=progress.failed,
        skipped_ok=progress.skipped_ok,
        skipped_failed=progress.skipped_failed,
        elapsed=progress.elapsed,
        interrupted=progress.interrupted,
        failures=dict(tally.failures.most_common()),
        state_times=tally.state_times(),
        runs_measured=tally.measured,
        requests_per_run=tally.requests / tally.measured if tally.measured else 0.0,
        requests_max=tally.requests_max,
        http_requests=tally.requests,
        token_requests=0,
        prompt_tokens=tally.tokens[0],
        completion_tokens=tally.tokens[1],
        total_tokens=tally.tokens[2],
        output_lines=lines_written,
    )


def _run_rows(
    runner: BatchRunner,
    client: ClientSettings,
    rows: list[dict[str, Any]],
    out: OutputWriter,
    tally: _Tally,
    address: str | None,
    actors: int,
    temp_dir: str | os.PathLike[str] | None,
    on_progress: Callable[[], None] | None,
    stop: threading.Event | None,
    options: dict[str, Any],
) -> None:
    cfg = runner.config
    progress = runner.progress
    own = not ray.is_initialized()
    if own:
        if address is None:
            init_local(temp_dir)
        else:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
    # The batch draws its own progress: no Ray Data progress bars or per-second log lines.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        options.setdefault("max_in_flight", max(1, math.ceil(cfg.concurrency / actors)))
        blocks = max(actors * options.get("blocks_per_actor", 4) * 4, len(rows) // 1000)
        ds = ray.data.from_items(rows, override_num_blocks=min(blocks, len(rows)))
        results = map_requests(
            ds,
            client,
            actors=actors,
            default_model=cfg.default_model,
            timeout=cfg.timeout,
            mode=cfg.mode,
            drop_params=cfg.drop_params,
            **options,
        )
        batches: Iterable[Any] = results.iter_batches(batch_format="pyarrow", batch_size=None)
        try:
            for batch in batches:
                for text in batch.column("record").to_pylist():
                    record = json.loads(text)
                    out.write(record)
                    progress.note_finished(tally.add(record))
                out.maybe_sync()
                if on_progress is not None:
                    on_progress()
                if stop is not None and stop.is_set():
                    break
        except KeyboardInterrupt:
            progress.interrupted = True
    finally:
        if own:
            ray.shutdown()
