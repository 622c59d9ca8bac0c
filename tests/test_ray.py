"""agentrun on Ray Data (`agentrun.ray`, `agentrun batch --ray`) against the emulator.

One local Ray per module (4 logical CPUs, no dashboard, session files in a pytest temp dir),
and emulators on 127.0.0.1 that the actors reach over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa  # installed with agentrun[ray]; `make test` installs it
import pyarrow.parquet as pq
import pytest
import ray

from agentrun import ConfigurationError, ConnectionSettings
from agentrun import ray as agentrun_ray
from agentrun.emulator import Emulator, EmulatorSettings, FaultRule, Timing

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = "azure_ai/agents/asst_abc123"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Ray for this module; yields its GCS address (for drivers in subprocesses)."""
    agentrun_ray.init_local(tmp_path_factory.mktemp("ray"), num_cpus=4)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """A dedicated plain-HTTP emulator with short runs."""
    settings = EmulatorSettings(timing=Timing(queue_delay=0.02, run_duration=0.05))
    with Emulator(settings).in_thread() as e:
        yield e


def write_jsonl(path: pathlib.Path, rows: list[Any]) -> pathlib.Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_records(out: pathlib.Path) -> list[dict[str, Any]]:
    files = sorted(out.glob("*.jsonl")) if out.is_dir() else [out]
    records = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            records += [json.loads(line) for line in fh if line.strip()]
    return records


def math_rows(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}{i}", "prompt": f"What is {i} * 3?", "model": MODEL}
        for i in range(n)
    ]


def test_client_settings_pickle_and_hide_secrets() -> None:
    """The actors' settings survive pickling unchanged and keep secrets out of their repr."""
    settings = agentrun_ray.ClientSettings(
        "http://127.0.0.1:1/api/projects/p",
        api_key="key-secret-1",
        tenant_id="t",
        client_id="c",
        client_secret="secret-2",
    )
    assert pickle.loads(pickle.dumps(settings)) == settings
    text = repr(settings)
    assert "key-secret-1" not in text and "secret-2" not in text
    env = agentrun_ray.ClientSettings.from_environment({"AZURE_AD_TOKEN": "tok-3", "HOME": "/x"})
    assert env.env == {"AZURE_AD_TOKEN": "tok-3"} and "tok-3" not in repr(env)
    with pytest.raises(ConfigurationError, match="mode"):
        agentrun_ray.ClientSettings("http://127.0.0.1:1", mode="fast")  # type: ignore[arg-type]


def test_client_settings_carry_a_connection_settings_value() -> None:
    """ClientSettings made from a ConnectionSettings give back an equal value (built where
    called, with the snapshot of the environment carried along), and refuse what cannot
    travel to an actor (a credential object)."""
    conn = ConnectionSettings(
        api_base="http://127.0.0.1:1/api/projects/p", api_key="k", pool_limit=7, env={}
    )
    shipped = pickle.loads(pickle.dumps(agentrun_ray.ClientSettings.from_settings(conn)))
    assert shipped.connection_settings() == conn
    with pytest.raises(ConfigurationError, match="credential"):
        agentrun_ray.ClientSettings.from_settings(conn.replace(credential=object()))


def test_settings_check_fails_early_even_inside_an_event_loop() -> None:
    """check() reports missing settings as ConfigurationError, also when called from code
    that runs in an event loop (a notebook cell), and sends nothing."""

    async def from_a_loop() -> None:
        agentrun_ray.ClientSettings(env={}).check()

    with pytest.raises(ConfigurationError, match="api_base"):
        asyncio.run(from_a_loop())
    agentrun_ray.ClientSettings("http://127.0.0.1:1/api/projects/p", api_key="k").check()


@pytest.fixture(scope="module")
def big_job(
    ray_cluster: str, emu: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> tuple[agentrun_ray.JobSummary, list[dict[str, Any]], dict[str, Any], list[Any]]:
    """2,000 rows (one scripted to fail, one malformed line) on 2 actors, run once."""
    emu.reset()
    tmp = tmp_path_factory.mktemp("big")
    rows: list[Any] = math_rows(2000)
    rows[7] = {"custom_id": "r7", "prompt": "What is 1 * 1? [emulator:fail=server_error]"}
    rows.append("{not json")
    inp = write_jsonl(tmp / "in.jsonl", rows)
    summary = agentrun_ray.run_job(
        inp,
        tmp / "out",
        agentrun_ray.ClientSettings(emu.endpoint, api_key=emu.api_key),
        default_model=MODEL,
        actors=2,
        max_in_flight=150,
        blocks_per_actor=4,
        rows_per_block=50,
    )
    return summary, read_records(tmp / "out"), emu.stats(), emu.runs()


def test_two_thousand_rows_on_two_actors_get_right_answers(big_job: Any) -> None:
    """Every row gets one output line in the `agentrun batch` format, with its own answer."""
    summary, records, stats, _ = big_job
    assert summary.written == 2001 and summary.completed == 1999 and summary.failed == 2
    by_id = Counter(r["custom_id"] for r in records)
    assert len(records) == 2001 and by_id[None] == 1
    assert all(n == 1 for cid, n in by_id.items() if cid is not None)
    for r in records:
        if r["custom_id"] in (None, "r7"):
            continue
        i = int(r["custom_id"][1:])
        assert set(r) == {
            "id", "custom_id", "response", "error", "thread_id", "run_id", "line", "timings",
            "requests",
        }  # fmt: skip
        assert r["error"] is None and r["response"]["status_code"] == 200
        reply = r["response"]["body"]["choices"][0]["message"]["content"]
        assert str(i * 3) in reply
        assert r["thread_id"].startswith("thread_") and r["run_id"].startswith("run_")
        assert r["response"]["request_id"] and r["requests"] >= 1
        assert r["timings"]["total"] > 0
        assert r["line"] is None  # read_text gives no line numbers
    assert stats["runs_created"] == 2000


def test_calls_in_flight_exceed_a_block_and_stay_within_the_actor_limits(big_job: Any) -> None:
    """Each actor keeps more calls in flight than one block holds (several blocks at once,
    one shared limit), and never more than its own limit."""
    _, _, stats, _ = big_job
    block_rows = 50
    assert block_rows < stats["peak_active_runs"] <= 2 * 150


def test_a_failed_row_is_an_error_row(big_job: Any) -> None:
    """A run that fails and a malformed line become error lines; the job goes on."""
    _, records, _, _ = big_job
    failed = next(r for r in records if r["custom_id"] == "r7")
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["type"] == "RunFailedError"
    assert failed["run_id"].startswith("run_")
    bad = next(r for r in records if r["custom_id"] is None)
    assert bad["error"]["code"] == "invalid_input_line"
    assert bad["error"]["message"].startswith("not valid JSON")


def test_every_run_carries_its_custom_id_in_metadata(big_job: Any) -> None:
    """Runs on the service can be matched to rows (and at-least-once duplicates found)."""
    _, records, _, runs = big_job
    by_run = {r["run_id"]: r["custom_id"] for r in records if r["run_id"]}
    assert len(runs) == 2000
    for run in runs:
        assert run["metadata"]["custom_id"] == by_run[run["id"]]


def test_service_principal_gets_one_token_per_actor(
    ray_cluster: str, tmp_path: pathlib.Path
) -> None:
    """Each actor's client fetches one token for all its rows; Parquet in and out."""
    rows = math_rows(300, "p")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    with Emulator(tls=True, ca_out=tmp_path / "ca.pem").in_thread() as e:
        settings = agentrun_ray.ClientSettings(
            e.endpoint,
            tenant_id=e.tenant_id,
            client_id=e.client_id,
            client_secret=e.client_secret,
            authority=e.authority,
            verify=str(e.ca_path),
        )
        summary = agentrun_ray.run_job(
            tmp_path / "in.parquet",
            tmp_path / "out",
            settings,
            output_format="parquet",
            actors=2,
            max_in_flight=50,
            rows_per_block=25,
        )
        stats = e.stats()
    assert stats["tokens_issued"] == 2
    assert summary.completed == 300 and summary.failed == 0
    table = pq.read_table(tmp_path / "out")
    assert sorted(table.column("custom_id").to_pylist()) == sorted(r["custom_id"] for r in rows)
    replies = dict(
        zip(table.column("custom_id").to_pylist(), table.column("reply").to_pylist(), strict=True)
    )
    assert all(str(int(cid[1:]) * 3) in replies[cid] for cid in replies)


_KILLED_DRIVER = """
import sys
from agentrun import ray as agentrun_ray
settings = agentrun_ray.ClientSettings(sys.argv[3], api_key=sys.argv[4])
agentrun_ray.run_job(sys.argv[1], sys.argv[2], settings, address=sys.argv[5], actors=2,
                     max_in_flight=10, blocks_per_actor=2, rows_per_block=10)
"""


def test_killed_job_resumes_without_resending_written_rows(
    ray_cluster: str, tmp_path: pathlib.Path
) -> None:
    """A driver killed part-way leaves some results; the rerun sends exactly the rows
    without a result (counted at the emulator) and the output has each row once."""
    n = 600
    inp = write_jsonl(tmp_path / "in.jsonl", math_rows(n, "k"))
    out = tmp_path / "out"
    settings = EmulatorSettings(timing=Timing(queue_delay=0.02, run_duration=0.1))
    with Emulator(settings).in_thread() as e:
        args = [str(inp), str(out), e.endpoint, e.api_key, ray_cluster]
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DRIVER, *args],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if out.is_dir() and len(read_lines(out)) >= 60:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the job finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        wait_quiet(e, out)
        written = {json.loads(line)["custom_id"] for line in read_lines(out)}
        assert 0 < len(written) < n
        before = e.stats()["runs_created"]
        summary = agentrun_ray.run_job(
            inp,
            out,
            agentrun_ray.ClientSettings(e.endpoint, api_key=e.api_key),
            actors=2,
            max_in_flight=50,
            rows_per_block=30,
        )
        sent_again = e.stats()["runs_created"] - before
    assert summary.skipped == len(written)
    assert sent_again == n - len(written) == summary.written
    records = read_records(out)
    assert len(records) == n
    assert {r["custom_id"] for r in records} == {f"k{i}" for i in range(n)}


def read_lines(out: pathlib.Path) -> list[str]:
    """Complete lines in the output parts (a part being written may end torn)."""
    lines = []
    for f in out.glob("*.jsonl"):
        text = f.read_text(encoding="utf-8")
        lines += [line for line in text.split("\n")[:-1] if line.strip()]
    return lines


def wait_quiet(e: Emulator, out: pathlib.Path) -> None:
    """Wait until the killed job's actors are gone: no active runs at the emulator and no
    output change for 2 s."""
    deadline = time.monotonic() + 60
    last: tuple[Any, ...] = ()
    since = time.monotonic()
    while time.monotonic() < deadline:
        stats = e.stats()
        now = (stats["runs_created"], stats["active_runs"], len(read_lines(out)))
        if now != last:
            last, since = now, time.monotonic()
        elif stats["active_runs"] == 0 and time.monotonic() - since >= 2.0:
            return
        time.sleep(0.1)
    raise AssertionError("the killed job did not go quiet")


def test_cli_batch_ray_writes_the_batch_format_and_resumes_with_plain_batch(
    ray_cluster: str, emu: Emulator, tmp_path: pathlib.Path
) -> None:
    """`agentrun batch --ray ADDRESS` writes the same output file as `agentrun batch` (line
    numbers included), and plain `agentrun batch` resumes from it with nothing left to run."""
    emu.reset()
    rows: list[Any] = math_rows(120, "c")
    rows.insert(5, '{"custom_id": "bad", "prompt": 7}')
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    base = [sys.executable, "-m", "agentrun.cli", "batch", str(inp), "-o", str(out)]
    conn = ["--api-base", emu.endpoint, "--api-key", emu.api_key, "--agent", "asst_abc123"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*base, *conn, "--ray", ray_cluster, "--progress", "plain", "--concurrency", "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 1, done.stderr  # the malformed line is a failed item
    assert "items: 121 in the input; ran 121: 120 completed, 1 failed" in done.stdout
    assert "agentrun batch: 121/121 done" in done.stderr
    records = read_records(out)
    assert len(records) == 121 and emu.stats()["runs_created"] == 120
    by_id = {r["custom_id"]: r for r in records}
    assert by_id["bad"]["error"]["code"] == "invalid_input_line" and by_id["bad"]["line"] == 6
    assert (
        by_id["c7"]["line"] == 9
        and "21" in (by_id["c7"]["response"]["body"]["choices"][0]["message"]["content"])
    )
    again = subprocess.run(
        [*base, *conn, "--progress", "none"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "skipped (already in the output): 120 succeeded, 1 failed" in again.stdout
    assert emu.stats()["runs_created"] == 120


def test_docs_example_runs(
    ray_cluster: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The complete example in docs/ray.md runs as written and prints what it says."""
    text = (ROOT / "docs" / "ray.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Emulator" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/ray.md", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == ["100 100 0", "100 0", "['q0', 'q1', 'q10']"]


@pytest.fixture
def actor_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop in its own thread, as a Ray Data actor runs an async UDF."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def call(loop: asyncio.AbstractEventLoop, mapper: Any, rows: list[dict[str, Any]]) -> Any:
    table = pa.table({"text": [json.dumps(r) for r in rows]})
    return asyncio.run_coroutine_threadsafe(mapper(table), loop)


def test_mapper_shares_one_limit_across_blocks_and_closes_its_client(
    emulator: Emulator, actor_loop: asyncio.AbstractEventLoop
) -> None:
    """Three blocks at once on one actor share its one client and its in-flight limit
    (not one limit per block); close() closes the client from outside the actor's loop."""
    settings = agentrun_ray.ClientSettings(emulator.endpoint, api_key=emulator.api_key)
    mapper = agentrun_ray.BatchMapper(settings, default_model=MODEL, max_in_flight=6)
    futures = [call(actor_loop, mapper, math_rows(10, f"b{b}-")) for b in range(3)]
    tables = [f.result(60) for f in futures]
    replies: dict[str, str] = {}
    for t in tables:
        ids, texts = t.column("custom_id").to_pylist(), t.column("reply").to_pylist()
        replies.update(zip(ids, texts, strict=True))
    assert len(replies) == 30
    assert all(str(int(cid.split("-")[1]) * 3) in reply for cid, reply in replies.items())
    assert 2 <= emulator.stats()["peak_active_runs"] <= 6
    client = mapper._client
    assert client is not None and client._transport._session is not None
    mapper.close()
    assert mapper._client is None and client._transport._session is None


def test_mapper_paces_its_share_and_backs_off_after_429(
    emulator: Emulator, actor_loop: asyncio.AbstractEventLoop
) -> None:
    """An actor's requests_per_minute spaces its starts; after a 429 it pauses new starts
    (1 s) on top of the client's own retry. Lower bounds only: a loaded machine is slower."""
    settings = agentrun_ray.ClientSettings(emulator.endpoint, api_key=emulator.api_key)
    paced = agentrun_ray.BatchMapper(
        settings, default_model=MODEL, max_in_flight=50, requests_per_minute=1200
    )
    try:
        call(actor_loop, paced, math_rows(10, "p")).result(60)
    finally:
        paced.close()
    starts = sorted(r["created_at_ms"] for r in emulator.runs())
    assert len(starts) == 10 and starts[-1] - starts[0] >= 9 * 50 * 0.9

    emulator.reset()
    emulator.inject(FaultRule(route="POST /threads/runs", status=429, retry_after=0.1))
    backing = agentrun_ray.BatchMapper(settings, default_model=MODEL, max_in_flight=1)
    try:
        table = call(actor_loop, backing, math_rows(2, "t")).result(60)
    finally:
        backing.close()
    assert table.column("error_code").null_count == 2  # the client retried the 429
    first, second = sorted(r["created_at_ms"] for r in emulator.runs())
    assert emulator.stats()["requests"]["POST /threads/runs"]["429"] == 1
    assert second - first >= 1000
