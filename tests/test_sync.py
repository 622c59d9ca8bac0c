"""The sync layer (`agentrun.completion`, `agentrun.Client`) against the real emulator.

Every test talks to an emulator over real sockets; the emulator runs on its own loop in a
daemon thread, and agentrun's sync calls run on agentrun's portal thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest

import agentrun
from agentrun import _sync
from agentrun._machine import State
from agentrun._results import RunFinished, StateChanged, TextDelta
from agentrun.emulator import Emulator, EmulatorSettings, Timing

MODEL = "azure_ai/agents/asst_abc123"
FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "sync.md"


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _key(emu: Emulator) -> dict[str, Any]:
    return {"api_base": emu.endpoint, "api_key": emu.api_key}


def _poll(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def fast(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory(EmulatorSettings(timing=FAST))


@pytest.fixture
def client(fast: Emulator) -> Iterator[agentrun.Client]:
    with agentrun.Client(fast.endpoint, api_key=fast.api_key) as c:
        yield c


# -- completion ---------------------------------------------------------------------------


def test_completion_basic(fast: Emulator) -> None:
    """A sync completion returns the chat.completion of one run, with its thread id."""
    resp = agentrun.completion(model=MODEL, messages=_user("Hello"), **_key(fast))
    assert isinstance(resp, agentrun.ChatCompletion)
    assert resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.thread_id.startswith("thread_")
    assert resp._hidden_params["thread_id"] == resp.thread_id
    assert resp.usage.total_tokens > 0


def test_completion_continues_thread(fast: Emulator) -> None:
    """thread_id continuity works through the sync layer as in the seed document."""
    first = agentrun.completion(model=MODEL, messages=_user("My name is Alice"), **_key(fast))
    second = agentrun.completion(
        model=MODEL, messages=_user("What's my name?"), thread_id=first.thread_id, **_key(fast)
    )
    assert "Alice" in second.choices[0].message.content


def test_module_calls_share_one_client_on_the_portal(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """Module-level sync calls from different threads share one pool and one token cache."""
    fast = emulator_factory(EmulatorSettings(timing=FAST), tls=True)
    kwargs: dict[str, Any] = {
        "verify": str(fast.ca_path),
        "api_base": fast.endpoint,
        "tenant_id": fast.tenant_id,
        "client_id": fast.client_id,
        "client_secret": fast.client_secret,
        "authority": fast.authority,
    }
    threads = [
        threading.Thread(
            target=agentrun.completion, kwargs={"model": MODEL, "messages": _user("hi"), **kwargs}
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    agentrun.completion(model=MODEL, messages=_user("hi"), **kwargs)
    assert fast.stats()["tokens_issued"] == 1
    assert fast.stats()["runs_by_status"] == {"completed": 4}


def test_streaming_yields_chunks_as_they_arrive(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """Sync streaming hands over each chunk as it arrives: the first content chunk comes while
    the run is still in progress, and the chunks' arrival spreads over the reply's deltas."""
    interval = 0.05
    emu = emulator_factory(
        EmulatorSettings(
            timing=Timing(queue_delay=0.01, run_duration=0.01, delta_interval=interval)
        )
    )
    arrivals: list[float] = []
    status_at_first: str | None = None
    text = []
    with agentrun.completion(
        model=MODEL, messages=_user("Hello"), stream=True, **_key(emu)
    ) as chunks:
        assert isinstance(chunks, _sync.SyncCompletionStream)
        for chunk in chunks:
            assert chunk.thread_id.startswith("thread_")
            if chunk.choices and chunk.choices[0].delta.get("content"):
                arrivals.append(time.monotonic())
                text.append(chunk.choices[0].delta.content)
                if status_at_first is None:
                    status_at_first = emu.runs()[0]["status"]
        assert chunks.result is not None
    assert status_at_first == "in_progress"
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * interval * 0.5
    assert "".join(text) == chunks.result.text
    assert emu.runs()[0]["status"] == "completed"


def test_streaming_close_early_cancels_the_run(fast: Emulator) -> None:
    """Leaving a sync stream early cancels the remote run before close() returns."""
    with agentrun.completion(
        model=MODEL, messages=_user("[emulator:sleep=30] wait"), stream=True, **_key(fast)
    ) as chunks:
        first = next(chunks)
        assert first.choices[0].delta.role == "assistant"
    assert fast.runs()[0]["status"] in ("cancelling", "cancelled")
    assert list(chunks) == []


def test_streaming_usage_chunk(fast: Emulator) -> None:
    """stream_options include_usage ends the sync stream with a usage chunk."""
    with agentrun.completion(
        model=MODEL,
        messages=_user("Hello"),
        stream=True,
        stream_options={"include_usage": True},
        **_key(fast),
    ) as chunks:
        items = list(chunks)
    assert items[-1].usage.total_tokens > 0
    assert items[-2].choices[0].finish_reason == "stop"


# -- errors -------------------------------------------------------------------------------


def test_errors_propagate_unchanged(fast: Emulator) -> None:
    """Errors raised on the portal reach the caller as the same agentrun types."""
    with pytest.raises(agentrun.ConfigurationError):
        agentrun.completion(model="gpt-4o", messages=_user("hi"), **_key(fast))
    with pytest.raises(agentrun.BadRequestError, match="presence_penalty"):
        agentrun.completion(model=MODEL, messages=_user("hi"), presence_penalty=1, **_key(fast))
    with pytest.raises(agentrun.AuthenticationError):
        agentrun.completion(model=MODEL, messages=_user("hi"), api_base=fast.endpoint, api_key="x")
    with pytest.raises(agentrun.RunFailedError) as info:
        agentrun.completion(
            model=MODEL, messages=_user("[emulator:fail=server_error]"), **_key(fast)
        )
    assert info.value.code == "server_error"
    assert info.value.history[-1].state is State.FAILED


def test_stream_error_raised_from_iterator(fast: Emulator) -> None:
    """A run that fails mid-stream raises its typed error from the sync iterator."""
    chunks = agentrun.completion(
        model=MODEL, messages=_user("[emulator:fail=server_error]"), stream=True, **_key(fast)
    )
    with chunks, pytest.raises(agentrun.RunFailedError):
        for _ in chunks:
            pass


def test_client_errors_propagate(client: agentrun.Client) -> None:
    """Client.run and Client.stream raise the run's agentrun error type."""
    with pytest.raises(agentrun.RunExpiredError):
        client.run("asst_abc123", "[emulator:expire]")
    with (
        client.stream("asst_abc123", "[emulator:fail=server_error]") as events,
        pytest.raises(agentrun.RunFailedError),
    ):
        for _ in events:
            pass
    with pytest.raises(agentrun.ConfigurationError):
        agentrun.Client("not a url", api_key="k")


# -- Client -------------------------------------------------------------------------------


def test_client_run(client: agentrun.Client) -> None:
    """Client.run returns the RunResult of a finished run."""
    result = client.run("asst_def456", "What is 25 * 4?")
    assert result.state is State.COMPLETED
    assert "100" in result.text
    again = client.run("asst_def456", "And 3 * 3?", thread_id=result.thread_id)
    assert again.thread_id == result.thread_id


def test_client_stream(client: agentrun.Client) -> None:
    """Client.stream yields state changes and text deltas, then RunFinished with the result."""
    with client.stream("asst_abc123", "Hello") as events:
        seen = list(events)
    assert isinstance(seen[0], StateChanged)
    assert any(isinstance(e, TextDelta) for e in seen)
    assert isinstance(seen[-1], RunFinished)
    assert events.result is seen[-1].result
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text == events.result.text
    assert events.thread_id == events.result.thread_id


def test_client_map(client: agentrun.Client, fast: Emulator) -> None:
    """Client.map yields every result as it finishes, failures as items, at bounded concurrency."""
    requests: list[Any] = [{"agent": "asst_abc123", "input": f"item {i}"} for i in range(20)]
    requests.append({"agent": "asst_abc123", "input": "[emulator:fail=server_error]"})
    with client.map(requests, concurrency=4) as results:
        items = list(results)
    assert sorted(r.index for r in items) == list(range(21))
    failed = [r for r in items if r.error is not None]
    assert len(failed) == 1
    assert isinstance(failed[0].error, agentrun.RunFailedError)
    assert all(r.result and f"item {r.index}" in r.result.text for r in items if not r.error)
    assert fast.stats()["peak_active_runs"] <= 4
    assert client.statistics().runs_started == 21


def test_client_map_from_a_generator(client: agentrun.Client) -> None:
    """A lazy iterable of requests is consumed off the portal loop, item by item."""
    consumers: set[int] = set()

    def requests() -> Iterator[dict[str, Any]]:
        for i in range(3):
            consumers.add(threading.get_ident())
            yield {"agent": "asst_abc123", "input": f"lazy {i}"}

    with client.map(requests(), concurrency=2) as results:
        assert len(list(results)) == 3
    assert threading.get_ident() not in consumers
    assert _sync._PORTAL.thread is not None
    assert _sync._PORTAL.thread.ident not in consumers


def test_client_map_close_cancels_running(client: agentrun.Client, fast: Emulator) -> None:
    """Closing a map early cancels the runs still going, remotely too."""
    requests = [{"agent": "asst_abc123", "input": "[emulator:sleep=30] slow"} for _ in range(3)]
    requests.insert(0, {"agent": "asst_abc123", "input": "quick"})
    with client.map(requests, concurrency=4) as results:
        first = next(results)
        assert first.error is None
    statuses = sorted(r["status"] for r in fast.runs())
    assert statuses.count("completed") == 1
    assert all(s in ("cancelling", "cancelled", "completed") for s in statuses)


def test_client_statistics_and_close(fast: Emulator) -> None:
    """statistics() counts what the client did; use after close raises ClientStateError."""
    c = agentrun.Client(fast.endpoint, api_key=fast.api_key)
    c.run("asst_abc123", "hi")
    stats = c.statistics()
    assert stats.runs_started == 1
    assert stats.runs_by_state == {"completed": 1}
    c.close()
    c.close()  # idempotent
    assert c.statistics().runs_started == 1
    with pytest.raises(agentrun.ClientStateError, match="closed"):
        c.run("asst_abc123", "hi")
    with pytest.raises(agentrun.ClientStateError):
        c.stream("asst_abc123", "hi")
    with pytest.raises(agentrun.ClientStateError):
        c.map([])
    with pytest.raises(agentrun.ClientStateError), c:
        pass


def test_client_on_a_portal_of_your_own(fast: Emulator) -> None:
    """Client(portal=...) runs on the caller's portal thread instead of the shared one."""
    threads: list[str] = []

    async def where() -> None:
        threads.append(threading.current_thread().name)

    with (
        anyio.from_thread.start_blocking_portal() as portal,
        agentrun.Client(fast.endpoint, api_key=fast.api_key, portal=portal) as c,
    ):
        assert c.run("asst_abc123", "hi").state is State.COMPLETED
        portal.call(where)
        with pytest.raises(agentrun.ClientStateError):
            portal.call(lambda: c.run("asst_abc123", "hi"))
    assert threads
    assert threads[0] != "agentrun-portal"


# -- threads and event loops ----------------------------------------------------------------


def test_call_from_a_thread_running_its_own_loop(fast: Emulator) -> None:
    """A sync call from a coroutine in another thread's event loop (a notebook cell) works,
    and that loop's thread is not the portal's."""
    out: dict[str, Any] = {}

    async def cell() -> None:
        out["loop_thread"] = threading.get_ident()
        resp = agentrun.completion(model=MODEL, messages=_user("Hello"), **_key(fast))
        out["content"] = resp.choices[0].message.content
        with agentrun.Client(fast.endpoint, api_key=fast.api_key) as c:
            out["text"] = c.run("asst_abc123", "hi").text

    thread = threading.Thread(target=asyncio.run, args=(cell(),))
    thread.start()
    thread.join(60)
    assert out["content"]
    assert out["text"]
    assert _sync._PORTAL.thread is not None
    assert out["loop_thread"] != _sync._PORTAL.thread.ident


def test_call_from_running_loop_in_this_thread(fast: Emulator) -> None:
    """Even from a coroutine on the calling thread's own loop, the portal answers (it is a
    different loop in a different thread)."""

    async def cell() -> str:
        return str(
            agentrun.completion(model=MODEL, messages=_user("Hello"), **_key(fast))
            .choices[0]
            .message.content
        )

    assert asyncio.run(cell())


def test_call_from_the_portal_thread_is_refused(fast: Emulator) -> None:
    """A sync call made on the portal's own thread raises ClientStateError, not a deadlock."""

    async def on_portal() -> None:
        agentrun.completion(model=MODEL, messages=_user("Hello"), **_key(fast))

    with pytest.raises(agentrun.ClientStateError, match="portal"):
        _sync._PORTAL.run(on_portal)

    with agentrun.Client(fast.endpoint, api_key=fast.api_key) as c:

        async def client_on_portal() -> None:
            c.run("asst_abc123", "hi")

        with pytest.raises(agentrun.ClientStateError, match="portal"):
            _sync._PORTAL.run(client_on_portal)
    assert not fast.runs()


def test_hundred_threads_one_token_bounded_connections(
    emulator_factory: Callable[..., Emulator],
) -> None:
    """100 threads making 10 module-level sync calls each, with service-principal credentials
    over TLS: one token request, and no more connections than the pool limit (100) to the API
    (plus the one azure-identity opens to the token endpoint)."""
    emu = emulator_factory(EmulatorSettings(timing=FAST), tls=True)
    kwargs: dict[str, Any] = {
        "api_base": emu.endpoint,
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "authority": emu.authority,
        "verify": str(emu.ca_path),
    }
    start = threading.Barrier(100)
    errors: list[BaseException] = []
    done = 0
    lock = threading.Lock()

    def worker(n: int) -> None:
        nonlocal done
        start.wait()
        try:
            for i in range(10):
                resp = agentrun.completion(model=MODEL, messages=_user(f"t{n} c{i}"), **kwargs)
                assert f"t{n} c{i}" in resp.choices[0].message.content
                with lock:
                    done += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert done == 1000
    stats = emu.stats()
    assert stats["tokens_issued"] == 1
    assert stats["runs_by_status"] == {"completed": 1000}

    async def shared_stats() -> agentrun.ClientStatistics:
        return agentrun._openai.get_client(**kwargs).statistics()

    client_stats = _sync._PORTAL.run(shared_stats)
    assert client_stats.token_requests == 1
    assert client_stats.connections_opened <= 100
    assert stats["connections_opened"] <= 100 + 1


# -- subprocesses: Ctrl-C, exit, docs -------------------------------------------------------

CTRL_C_SCRIPTS = {
    "completion": """
        agentrun.completion(model="azure_ai/agents/asst_abc123", api_base=endpoint,
                            api_key=key, messages=[{"role": "user", "content": prompt}])
    """,
    "stream": """
        with agentrun.completion(model="azure_ai/agents/asst_abc123", api_base=endpoint,
                                 api_key=key, stream=True,
                                 messages=[{"role": "user", "content": prompt}]) as chunks:
            for chunk in chunks:
                pass
    """,
    "client": """
        with agentrun.Client(endpoint, api_key=key) as client:
            client.run("asst_abc123", prompt)
    """,
}


def _script(body: str) -> str:
    head = "import sys\nimport agentrun\nendpoint, key = sys.argv[1], sys.argv[2]\n"
    return head + textwrap.dedent(body)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery differs on Windows")
@pytest.mark.parametrize("kind", sorted(CTRL_C_SCRIPTS))
def test_ctrl_c_cancels_the_remote_run(emulator: Emulator, tmp_path: Path, kind: str) -> None:
    """SIGINT during a sync call cancels the remote run, then the process ends with
    KeyboardInterrupt, and nothing else on stderr (no unclosed sessions, no lost tasks)."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(
        _script('prompt = "[emulator:sleep=30] wait"\n' + textwrap.dedent(CTRL_C_SCRIPTS[kind]))
    )
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", str(script), emulator.endpoint, emulator.api_key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _poll(
            lambda: any(r["status"] == "in_progress" for r in emulator.runs()),
            "the run to start",
            timeout=30,
        )
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    # The cancel reached the service before the process ended.
    assert [r["status"] for r in emulator.runs()] in (["cancelling"], ["cancelled"])
    assert "Warning" not in err
    assert "Unclosed" not in err
    assert "destroyed" not in err


EXIT_SCRIPT = """
    agentrun.completion(model="azure_ai/agents/asst_abc123", api_base=endpoint, api_key=key,
                        messages=[{"role": "user", "content": "Hello"}])
    with agentrun.completion(model="azure_ai/agents/asst_abc123", api_base=endpoint,
                             api_key=key, stream=True,
                             messages=[{"role": "user", "content": "Hello"}]) as chunks:
        print("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
    left_open = agentrun.Client(endpoint, api_key=key)
    left_open.run("asst_abc123", "Hi")
"""


def test_exit_is_clean(emulator: Emulator, tmp_path: Path) -> None:
    """A process that made sync calls (and left a Client and pooled connections open) exits
    under -W error with nothing on stderr: the portal closes everything at exit."""
    script = tmp_path / "exit.py"
    script.write_text(_script(EXIT_SCRIPT))
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), emulator.endpoint, emulator.api_key],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "Hello" in proc.stdout
    assert emulator.stats()["runs_by_status"] == {"completed": 3}


def test_exit_cancels_a_call_still_running_in_a_daemon_thread(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Exiting while a daemon thread waits on a long sync call cancels that run remotely,
    quickly and quietly."""
    script = tmp_path / "exit_busy.py"
    script.write_text(
        _script("""
            import threading, time
            def call():
                try:
                    agentrun.completion(model="azure_ai/agents/asst_abc123", api_base=endpoint,
                                        api_key=key, stream=False,
                                        messages=[{"role": "user", "content":
                                                   "[emulator:sleep=30] wait"}])
                except agentrun.AgentRunError:
                    pass
            threading.Thread(target=call, daemon=True).start()
            print("started", flush=True)
            sys.stdin.readline()
        """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", str(script), emulator.endpoint, emulator.api_key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _poll(
            lambda: any(r["status"] == "in_progress" for r in emulator.runs()),
            "the run to start",
            timeout=30,
        )
        _out, err = proc.communicate("\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == ""
    assert [r["status"] for r in emulator.runs()] in (["cancelling"], ["cancelled"])


def _doc_scripts() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    return [b for b in blocks if "Emulator(" in b]


def test_docs_have_runnable_examples() -> None:
    """docs/sync.md keeps its complete, runnable examples."""
    assert len(_doc_scripts()) >= 4


@pytest.mark.parametrize("index", range(len(_doc_scripts())))
def test_docs_example_runs(index: int, tmp_path: Path) -> None:
    """Each complete example in docs/sync.md runs as written, under -W error, silently."""
    script = tmp_path / "example.py"
    script.write_text(_doc_scripts()[index])
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip()
    assert proc.stderr == ""
