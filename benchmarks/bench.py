"""The benchmark harness: agentrun against LiteLLM and azure-ai-agents on the emulator.

    .venv/bin/python benchmarks/bench.py            # the full run (`make bench`)
    .venv/bin/python benchmarks/bench.py --smoke    # agentrun only, 1 and 10 invocations
    .venv/bin/python benchmarks/bench.py --report-only   # re-render docs from latest.json
    .venv/bin/python benchmarks/bench.py --plan floor --reps 3 --cprofile   # `make bench-floor`
    .venv/bin/python benchmarks/bench.py --plan scale    # `make bench-scale`: N=10,000 rows
    .venv/bin/python benchmarks/bench.py --plan peers --reps 3    # `make bench-peers`
    .venv/bin/python benchmarks/bench.py --plan memory   # memory per in-flight run only
    .venv/bin/python benchmarks/bench.py --plan memory --probes rss   # its RSS rows only

Every CPU figure is also reported as a ratio to the *floor* (runners/run_floor.py: a bare
aiohttp client, one streaming POST /threads/runs per invocation), measured in the same
repetition; the 100/1,000 rows run `--reps` times (repetitions outermost) with the machine's
load recorded beside each row. The openai -> proxy rows start `agentrun serve` in a process of
its own and measure its CPU apart.

The emulator runs in its own process (`agentrun emulator --tls`, fixed timings); every client
runs in its own process (runners/), on the same scenarios, one at a time, with the emulator
reset before each. The peers run from .bench-venv, which this script creates from
requirements-peers.txt; agentrun runs from the project's own venv (this interpreter).
Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import pathlib
import platform
import queue
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RUNNERS = HERE / "runners"
RESULTS = HERE / "results"
PEERS_VENV = ROOT / ".bench-venv"
REQUIREMENTS = HERE / "requirements-peers.txt"
DOCS = ROOT / "docs" / "benchmarks.md"

AGENT = "asst_abc123"
TIMING = {"queue_delay": 0.05, "run_duration": 1.0, "delta_interval": 0.01}
POOL_LIMIT = 100
# The memory diagnostic's emulator: runs long enough that all 10,000 are created (and none has
# finished) when memory settles, even under tracemalloc on a loaded machine.
MEMORY_TIMING = TIMING | {"run_duration": 60.0}
MEMORY_N = 10000
# `make bench-smoke`: the most requests a polled invocation may take, on average over a row. A
# regression bound, not a target: the goal is 3 (create, the poll that sees the run finish, the
# reply); the smoke rows measure 3.1-3.2 (a few runs are the schedule's probes). The old
# schedule's 5.0 fails it.
POLL_REQUESTS_BOUND = 4.0


class Client:
    """One contender: which runner, in which venv, with which variant."""

    def __init__(
        self,
        name: str,
        label: str,
        family: str,
        runner: str,
        variant: str,
        *,
        streaming: bool,
        continues: bool = True,
        extra: dict[str, Any] | None = None,
        note: str = "",
    ) -> None:
        self.name = name
        self.label = label
        self.family = family
        self.runner = runner
        self.variant = variant
        self.streaming = streaming
        self.continues = continues
        self.extra = extra or {}
        self.note = note

    @property
    def peer(self) -> bool:
        """Runs from .bench-venv (the floor and the openai-via-proxy rows use the project's)."""
        return self.family in ("litellm", "sdk")


CLIENTS = {
    c.name: c
    for c in [
        Client(
            "floor",
            "floor (bare aiohttp)",
            "floor",
            "run_floor.py",
            "stream",
            streaming=True,
            continues=False,
            note="runners/run_floor.py: one streaming POST /threads/runs per invocation on a "
            "plain aiohttp session (same pool size, CA and token), SSE body read to the end; "
            "every CPU ratio is to this row of the same repetition",
        ),
        Client(
            "openai-proxy",
            "openai -> proxy",
            "proxy",
            "run_openai_proxy.py",
            "chat",
            streaming=False,
            continues=False,
            note="openai.AsyncOpenAI().chat.completions.create() against `agentrun serve` "
            "(plain HTTP on 127.0.0.1), which calls the emulator; the proxy process's CPU is "
            "measured apart",
        ),
        Client(
            "openai-proxy-stream",
            "openai -> proxy, stream",
            "proxy",
            "run_openai_proxy.py",
            "chat-stream",
            streaming=True,
            continues=False,
            note="as openai -> proxy, with stream=True, every chunk read",
        ),
        Client(
            "agentrun-stream",
            "agentrun stream",
            "agentrun",
            "run_agentrun.py",
            "stream",
            streaming=True,
            note="AsyncClient(mode='stream'), client.stream() events",
        ),
        Client(
            "agentrun-poll",
            "agentrun poll",
            "agentrun",
            "run_agentrun.py",
            "poll",
            streaming=False,
            note="AsyncClient(mode='poll'), client.run()",
        ),
        Client(
            "agentrun-auto",
            "agentrun auto",
            "agentrun",
            "run_agentrun.py",
            "auto",
            streaming=False,
            note="AsyncClient() default mode 'auto', client.run()",
        ),
        Client(
            "agentrun-acompletion",
            "agentrun acompletion",
            "agentrun",
            "run_agentrun.py",
            "acompletion",
            streaming=False,
            note="agentrun.acompletion(): OpenAI format, the drop-in for LiteLLM",
        ),
        Client(
            "agentrun-acompletion-stream",
            "agentrun acompletion stream",
            "agentrun",
            "run_agentrun.py",
            "acompletion-stream",
            streaming=True,
            note="agentrun.acompletion(stream=True), every chunk read",
        ),
        Client(
            "agentrun-sync",
            "agentrun sync",
            "agentrun",
            "run_agentrun.py",
            "sync",
            streaming=False,
            note="agentrun.Client.run() from one thread per invocation",
        ),
        Client(
            "agentrun-sp",
            "agentrun auto, SP cold",
            "agentrun",
            "run_agentrun.py",
            "auto",
            streaming=False,
            extra={"credentials": "sp", "warmup": False},
            note="service-principal credentials, no warm-up: all runs race for one token",
        ),
        Client(
            "agentrun-stream-p1000",
            "agentrun stream, pool 1000",
            "agentrun",
            "run_agentrun.py",
            "stream",
            streaming=True,
            extra={"pool_limit": 1000},
            note="as agentrun stream, with pool_limit=1000",
        ),
        Client(
            "agentrun-auto-p1000",
            "agentrun auto, pool 1000",
            "agentrun",
            "run_agentrun.py",
            "auto",
            streaming=False,
            extra={"pool_limit": 1000},
            note="as agentrun auto, with pool_limit=1000 (so all 1,000 stream)",
        ),
        Client(
            "agentrun-auto-half",
            "agentrun auto, half-pool rule",
            "agentrun",
            "run_agentrun.py",
            "auto-half",
            streaming=False,
            note="a candidate auto rule, emulated per call: the first pool_limit/2 stream, "
            "the rest poll",
        ),
        Client(
            "agentrun-auto-fit",
            "agentrun auto, fit-the-pool rule",
            "agentrun",
            "run_agentrun.py",
            "auto-fit",
            streaming=False,
            note="the rule proposed in issue 15, emulated per call: stream when all in-flight "
            "runs fit in the pool (n <= pool_limit), else poll every run",
        ),
        Client(
            "agentrun-stream-nodeadline",
            "agentrun stream, timeout=None",
            "agentrun",
            "run_agentrun.py",
            "stream",
            streaming=True,
            extra={"client_timeout": None},
            note="as agentrun stream, with AsyncClient(timeout=None): no invocation deadline, "
            "so no cancel scope with a timer per body chunk (an A/B of that cost)",
        ),
        Client(
            "litellm",
            "LiteLLM",
            "litellm",
            "run_litellm.py",
            "acompletion",
            streaming=False,
            continues=False,
            note="litellm.acompletion(model='azure_ai/agents/asst_...')",
        ),
        Client(
            "litellm-stream",
            "LiteLLM stream",
            "litellm",
            "run_litellm.py",
            "stream",
            streaming=True,
            continues=False,
            note="litellm.acompletion(..., stream=True)",
        ),
        Client(
            "sdk-poll",
            "azure-ai-agents",
            "sdk",
            "run_sdk.py",
            "poll",
            streaming=False,
            note="create_thread_and_process_run / runs.create_and_process + messages.list",
        ),
        Client(
            "sdk-stream",
            "azure-ai-agents stream",
            "sdk",
            "run_sdk.py",
            "stream",
            streaming=True,
            note="threads.create + runs.stream / runs.stream",
        ),
    ]
}

PEER_NAMES = ("litellm", "litellm-stream", "sdk-poll", "sdk-stream")
AGENTRUN_NAMES = (
    "agentrun-stream",
    "agentrun-poll",
    "agentrun-auto",
    "agentrun-acompletion",
    "agentrun-acompletion-stream",
    "agentrun-sync",
)
# The issue-15 rows: every CPU figure is a ratio to the floor measured in the same repetition.
FLOOR_NAMES = (
    "floor",
    "agentrun-stream",
    "agentrun-acompletion-stream",
    "agentrun-acompletion",
    "agentrun-poll",
    "agentrun-auto",
    "agentrun-auto-half",
    "agentrun-auto-fit",
    "openai-proxy",
    "openai-proxy-stream",
)


def floor_plan(
    reps: int,
    sizes: tuple[int, ...] = (100, 1000),
    names: tuple[str, ...] = FLOOR_NAMES,
    *,
    sync: bool = True,
) -> list[tuple[str, str, int, int]]:
    """(client, kind, n, rep): repetitions outermost, so a change of load hits every client.

    The sync layer runs at 100 only (100 threads, the figure the issue asks for)."""
    plan = []
    for rep in range(reps):
        for n in sizes:
            for name in names:
                plan.append((name, "new", n, rep))
            if n == 100 and sync:
                plan.append(("agentrun-sync", "new", n, rep))
    return plan


# Issue 15's "10,000 concurrent invocations in every mode": the floor at 10,000 (the CPU ratios'
# denominator), every agentrun entry point, and the cold service-principal start.
SCALE_NAMES = (
    "floor",
    "agentrun-stream",
    "agentrun-poll",
    "agentrun-auto",
    "agentrun-acompletion",
    "agentrun-acompletion-stream",
    "agentrun-sync",
    "agentrun-sp",
)
# The peers beside the floor and the agentrun rows the table divides by them.
PEERS_PLAN_NAMES = (
    "floor",
    "agentrun-acompletion",
    "litellm",
    "agentrun-acompletion-stream",
    "litellm-stream",
    "agentrun-poll",
    "sdk-poll",
)
# The memory diagnostic: (client, probe) at MEMORY_N on the MEMORY_TIMING emulator. "rss": the
# process's RSS growth with every run in flight; "tracemalloc": what is held, by file and line.
MEMORY_PLAN = (
    ("agentrun-poll", "rss"),
    ("agentrun-poll", "tracemalloc"),
    ("agentrun-acompletion", "rss"),
    ("agentrun-acompletion", "tracemalloc"),
)
#: The tracemalloc group of the benchmark runner's own blocks (`_memory_area`, `harness_share`).
HARNESS_AREA = "the runner's own records (benchmarks/runners)"


def scale_plan(reps: int = 1) -> list[tuple[str, str, int, int]]:
    """(client, kind, n, rep): every SCALE_NAMES row at 10,000, `reps` times."""
    return [(name, "new", 10000, rep) for rep in range(reps) for name in SCALE_NAMES]


def full_plan() -> list[tuple[str, str, int]]:
    """(client, kind, n) in the order they run (one repetition; `--reps` adds the floor plan's)."""
    plan: list[tuple[str, str, int]] = []
    for kind in ("new", "continue"):
        for n in (1, 100, 1000):
            for name in ("floor", *AGENTRUN_NAMES, *PEER_NAMES):
                if kind == "continue" and not CLIENTS[name].continues:
                    continue
                plan.append((name, kind, n))
    # Pool size: what a pool as large as the batch buys.
    plan += [("agentrun-stream-p1000", "new", 1000), ("agentrun-auto-p1000", "new", 1000)]
    plan += [("agentrun-auto-half", "new", 10000)]
    # Ten thousand at once, in every mode and entry point: agentrun only (the peers would take
    # minutes and open thousands of connections). Every call must end with its answer: with a
    # pool of 100 a streamed run holds a connection for its whole life, so 10,000 streams take
    # about 100 rounds, and the later ones wait for a connection, within their own deadline.
    plan += [
        ("floor", "new", 10000),
        ("agentrun-auto", "new", 10000),
        ("agentrun-poll", "new", 10000),
        ("agentrun-stream", "new", 10000),
        ("agentrun-acompletion", "new", 10000),
        ("agentrun-acompletion-stream", "new", 10000),
        ("agentrun-sync", "new", 10000),
        ("agentrun-sp", "new", 10000),
    ]
    return plan


def smoke_plan() -> list[tuple[str, str, int]]:
    """Small and quick (< 60 s): every agentrun variant once, both kinds of thread."""
    plan = [("agentrun-auto", "new", 1), ("floor", "new", 10)]
    plan += [(name, "new", 10) for name in AGENTRUN_NAMES]
    plan += [("agentrun-stream", "continue", 10), ("agentrun-poll", "continue", 10)]
    plan.append(("agentrun-sp", "new", 10))
    return plan


# -- the emulator ------------------------------------------------------------------------------


_SETTING = re.compile(r"\s*(tenant id|client id|client secret|static API key|authority):\s+(\S+)")


class Emulator:
    """`agentrun emulator --tls` in a child process, and a small HTTP client for its API."""

    def __init__(self, workdir: pathlib.Path, timing: dict[str, float] = TIMING) -> None:
        self.timing = timing
        self.ca_path = workdir / "emulator-ca.pem"
        exe = pathlib.Path(sys.executable).parent / "agentrun"
        cmd = [str(exe) if exe.exists() else sys.executable, "emulator"]
        if not exe.exists():
            cmd = [sys.executable, "-c", "from agentrun.cli import main; main()", "emulator"]
        cmd += [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tls",
            "--ca-out",
            str(self.ca_path),
            "--queue-delay",
            str(timing["queue_delay"]),
            "--run-duration",
            str(timing["run_duration"]),
            "--delta-interval",
            str(timing["delta_interval"]),
        ]
        self.log = open(workdir / "emulator.log", "w")  # noqa: SIM115 - closed in stop()
        env = clean_env()
        env["PYTHONPATH"] = str(ROOT)  # this tree's emulator, not the venv's checkout's
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self.endpoint = ""
        self.settings: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.write(line)
            m = _SETTING.match(line)
            if m:
                self.settings[m.group(1)] = m.group(2)
            if line.startswith("ready: "):
                self.endpoint = line.split(" ", 1)[1].strip()
                break
        if not self.endpoint:
            self.stop()
            raise SystemExit(f"the emulator did not start; see {workdir / 'emulator.log'}")
        # Keep draining its stdout so it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        url = self.endpoint.split("/api/", 1)[0]
        self.host, port = url.removeprefix("https://").split(":")
        self.port = int(port)
        self.authority = url
        self.ctx = ssl.create_default_context(cafile=str(self.ca_path))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)

    @property
    def api_key(self) -> str:
        return self.settings.get("static API key", "emulator-key")

    def call(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        """One request on a fresh connection (closed after), so the figures can allow for it."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        try:
            headers = {"Content-Type": "application/json", "Connection": "close"}
            if auth:
                headers["Authorization"] = f"Bearer {self.api_key}"
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
            return json.loads(raw)
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        return dict(self.call("GET", "/_emulator/stats"))

    def runs(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_emulator/runs")["data"])

    def reset(self) -> None:
        self.call("POST", "/_emulator/reset", {})

    def make_threads(self, n: int) -> list[str]:
        """`n` threads holding one earlier exchange, for the continued-thread scenarios."""
        base = "/" + self.endpoint.split("/", 3)[3] + "/threads?api-version=v1"
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        ids = []
        body = json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hello, my name is Ada."},
                    {"role": "assistant", "content": "Nice to meet you, Ada!"},
                ]
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        try:
            for _ in range(n):
                conn.request("POST", base, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"creating a thread: {resp.status} {raw[:300]!r}")
                ids.append(json.loads(raw)["id"])
        finally:
            conn.close()
        return ids

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


class Proxy:
    """`agentrun serve` in a child process: one model, `bench`, whose api_base is the emulator.

    Plain HTTP on 127.0.0.1 towards the openai client; towards the emulator the same TLS, CA,
    static token and pool size as every other client. Its CPU is read from /proc like the
    emulator's, so the harness can put it beside the openai client's own."""

    def __init__(self, emu: Emulator, workdir: pathlib.Path) -> None:
        cfg = workdir / "proxy.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: bench\n"
            "    litellm_params:\n"
            f"      model: azure_ai/agents/{AGENT}\n"
            f"      api_base: {emu.endpoint}\n"
            f"      api_key: {emu.api_key}\n"
            f"      verify: {emu.ca_path}\n"
            f"      pool_limit: {POOL_LIMIT}\n"
        )
        cmd = [sys.executable, "-c", "from agentrun.cli import main; main()", "serve"]
        cmd += ["--config", str(cfg), "--port", "0", "--log-level", "warning"]
        cmd += ["--max-connections", "20000"]
        env = clean_env()
        env["PYTHONPATH"] = str(ROOT)
        self.log = open(workdir / "proxy.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self.url = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready: "):
                self.url = line.split(" ", 1)[1].strip()
                break
        if not self.url:
            self.stop()
            raise SystemExit(f"the proxy did not start; see {workdir / 'proxy.log'}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


# -- environments ------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment for children: no Azure settings or proxies leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AZURE_")
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def peers_python() -> pathlib.Path:
    return PEERS_VENV / "bin" / "python"


def ensure_peers_venv() -> None:
    """Create .bench-venv from requirements-peers.txt (again when the file changed)."""
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = PEERS_VENV / ".requirements-sha256"
    if peers_python().exists() and stamp.exists() and stamp.read_text().strip() == want:
        return
    print(f"setting up {PEERS_VENV.name} from {REQUIREMENTS.name} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    if not peers_python().exists():
        subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(peers_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want + "\n")


def versions(with_peers: bool) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for p in PKGS:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out: dict[str, str] = {}
    mine = ["agentrun", "aiohttp", "anyio", "attrs", "azure-identity"]
    out.update(
        _pkg_versions(sys.executable, code.replace("PKGS", repr(mine)), prefix="agentrun venv: ")
    )
    if with_peers and peers_python().exists():
        theirs = ["litellm", "azure-ai-agents", "azure-core", "httpx", "aiohttp", "py-spy"]
        out.update(
            _pkg_versions(
                str(peers_python()), code.replace("PKGS", repr(theirs)), prefix="peers venv: "
            )
        )
    return out


def _pkg_versions(python: str, code: str, prefix: str) -> dict[str, str]:
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return {prefix + k: v for k, v in json.loads(res.stdout).items()}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


# -- one measured run ----------------------------------------------------------------------------


def _reader(stream: Any, q: queue.Queue[str | None]) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def _wait_line(q: queue.Queue[str | None], prefix: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            return None
        if line.startswith(prefix):
            return line


def run_one(
    emu: Emulator,
    client: Client,
    kind: str,
    n: int,
    workdir: pathlib.Path,
    *,
    profile_with: pathlib.Path | None = None,
    proxy: Proxy | None = None,
    rep: int = 0,
    cprofile: pathlib.Path | None = None,
    extra_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run `client` on (`kind`, `n`) in its own process; return its figures."""
    tag = f"{client.name}-{kind}-{n}-r{rep}"
    if extra_cfg and extra_cfg.get("memprobe"):
        tag += "-" + str(extra_cfg["memprobe"])
    emu.reset()
    thread_ids = emu.make_threads(n) if kind == "continue" else []
    threads_file = ""
    if thread_ids:
        threads_path = workdir / f"{tag}.threads"
        threads_path.write_text("\n".join(thread_ids) + "\n")
        threads_file = str(threads_path)
    # 10,000 streams on a pool of 100 take ~100 rounds of a run each: generous, not a goal.
    timeout = 600.0 if n >= 10000 else 240.0 if n >= 5000 else 120.0
    cfg = {
        "variant": client.variant,
        "endpoint": emu.endpoint,
        "api_key": emu.api_key,
        "ca_path": str(emu.ca_path),
        "agent": AGENT,
        "n": n,
        "threads_file": threads_file,
        "timeout": timeout,
        "pool_limit": POOL_LIMIT,
        "warmup": True,
        "out": str(workdir / f"{tag}.out.json"),
        "sp": {
            "tenant_id": emu.settings.get("tenant id", "emulator-tenant"),
            "client_id": emu.settings.get("client id", "agentrun-emulator"),
            "client_secret": emu.settings.get("client secret", "emulator-secret"),
            "authority": emu.authority,
        },
    }
    cfg.update(client.extra)
    cfg.update(extra_cfg or {})
    if client.family == "proxy":
        if proxy is None:
            raise RuntimeError("the openai -> proxy rows need the proxy running")
        cfg["proxy_url"] = proxy.url.rstrip("/") + "/v1"
    if cprofile is not None:
        cfg["cprofile"] = str(cprofile)
    env = clean_env()
    if not client.peer:
        # agentrun from this tree, not whichever checkout the venv was installed from.
        env["PYTHONPATH"] = str(ROOT)
    if client.family == "sdk":
        env["SSL_CERT_FILE"] = str(emu.ca_path)  # see runners/run_sdk.py
    cfg_path = workdir / f"{tag}.json"
    cfg_path.write_text(json.dumps(cfg))
    python = sys.executable if not client.peer else str(peers_python())
    cmd = [python, str(RUNNERS / client.runner), str(cfg_path)]
    err_path = workdir / f"{tag}.stderr"
    result: dict[str, Any] = {"client": client.name, "kind": kind, "n": n, "rep": rep}
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=str(RUNNERS),
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
        try:
            ready = _wait_line(lines, "READY", 180)
            if ready is None:
                raise RuntimeError("the runner never became ready")
            spies = []
            if profile_with is not None:
                spies.append(_spy(profile_with, proc.pid, workdir / f"{tag}.profile.txt"))
                spies.append(_spy(profile_with, emu.proc.pid, workdir / f"{tag}.emu-profile.txt"))
                time.sleep(1.0)  # let py-spy attach before the phase starts
            before = emu.stats()
            emu_cpu0 = emu.cpu_seconds()
            proxy_cpu0 = proxy.cpu_seconds() if proxy is not None else 0.0
            proc.stdin.write("GO\n")
            proc.stdin.flush()
            if cfg.get("memprobe"):
                _tell_when_all_active(emu, proc, n, before)
            done = _wait_line(lines, "DONE", timeout + 90)
            if done is None:
                raise RuntimeError("the runner did not finish in time")
            emu_cpu1 = emu.cpu_seconds()
            proxy_cpu1 = proxy.cpu_seconds() if proxy is not None else 0.0
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                try:
                    spy.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait(timeout=10)
            after = emu.stats()
            runs = emu.runs()
            proc.wait(timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            proc.kill()
            proc.wait(timeout=30)
            tail = err_path.read_text()[-2000:] if err_path.exists() else ""
            result["failed"] = f"{exc}; stderr tail: {tail}"
            return result
    out = json.loads(pathlib.Path(cfg["out"]).read_text())
    result.update(figures(client, n, out, before, after, runs))
    result["emulator_cpu_s"] = round(emu_cpu1 - emu_cpu0, 3)
    result["load"] = {"at_go": out.get("load_at_go"), "at_end": out.get("load_at_end")}
    if client.family == "proxy":
        # /proc ticks are 10 ms: at 100 requests that is 0.1 ms per request of resolution.
        result["proxy_cpu_s"] = round(proxy_cpu1 - proxy_cpu0, 3)
        result["proxy_cpu_ms_per_inv"] = round((proxy_cpu1 - proxy_cpu0) * 1000 / n, 3)
    result["exit_code"] = proc.returncode
    return result


def _tell_when_all_active(
    emu: Emulator, proc: subprocess.Popen[str], n: int, before: dict[str, Any], limit: float = 300
) -> None:
    """The memory probe's cue: write PROBE to the runner once the emulator holds all `n` runs
    of this phase active (or after `limit` seconds: the probe then measures what there is)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        stats = emu.stats()
        if stats["runs_created"] - before["runs_created"] >= n and stats["active_runs"] >= n:
            break
        time.sleep(0.5)
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write("PROBE\n")
        proc.stdin.flush()


def _spy(pyspy: pathlib.Path, pid: int, out: pathlib.Path) -> subprocess.Popen[bytes]:
    """py-spy attached to `pid` until SIGINT: samples the measured phase only."""
    cmd = [
        str(pyspy),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "500",
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(q * len(data) + 0.5) - 1))]


def _api_route(route: str) -> bool:
    return "/threads" in route or "/assistants" in route


def figures(
    client: Client,
    n: int,
    out: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    records = out["records"]
    ok = [r for r in records if r["ok"]]
    errors = collections.Counter(r["error"] for r in records if not r["ok"])
    by_route: dict[str, int] = {}
    for route, statuses in after["requests"].items():
        was = sum(before["requests"].get(route, {}).values())
        count = sum(statuses.values()) - was
        if count and not route.startswith(("GET /_emulator", "POST /_emulator")):
            by_route[route] = count
    api_requests = sum(c for r, c in by_route.items() if _api_route(r))
    auth_requests = sum(c for r, c in by_route.items() if not _api_route(r))
    by_id = {r["id"]: r for r in runs}
    by_thread: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in runs:
        by_thread[r["thread_id"]].append(r)
    lags, ttft_added, ttft, latency, run_ms = [], [], [], [], []
    matched = 0
    for rec in ok:
        run = by_id.get(rec.get("run_id") or "")
        if run is None and rec.get("thread_id"):
            candidates = by_thread.get(rec["thread_id"], [])
            run = candidates[0] if len(candidates) == 1 else None
        latency.append(rec["done_ms"] - rec["start_ms"])
        if rec.get("first_delta_ms") is not None:
            ttft.append(rec["first_delta_ms"] - rec["start_ms"])
        if run is None or run.get("completed_at_ms") is None:
            continue
        matched += 1
        lags.append(rec["done_ms"] - run["completed_at_ms"])
        run_ms.append(run["completed_at_ms"] - run["created_at_ms"])
        if rec.get("first_delta_ms") is not None and run.get("first_delta_at_ms") is not None:
            ttft_added.append(rec["first_delta_ms"] - run["first_delta_at_ms"])
    modes = collections.Counter(r.get("mode") for r in ok if r.get("mode"))
    phase_mem = out["phase_peak_rss"] - out["ready_rss"]
    res: dict[str, Any] = {
        "ok": len(ok),
        "errors": dict(errors.most_common(3)),
        "wall_s": round(out["wall_s"], 3),
        "cpu_s": round(out["cpu_s"], 4),
        "cpu_ms_per_inv": round(out["cpu_s"] * 1000 / n, 3),
        "total_cpu_s": round(out["total_cpu_s"], 3),
        "import_s": round(out["import_wall_s"], 3),
        "import_cpu_s": round(out["import_cpu_s"], 3),
        "ready_rss_mb": round(out["ready_rss"] / 2**20, 1),
        "peak_rss_mb": round(out["max_rss"] / 2**20, 1),
        "phase_growth_mb": round(phase_mem / 2**20, 1),
        "mem_kb_per_inv": round(phase_mem / 1024 / n, 2),
        "requests": api_requests,
        "requests_per_inv": round(api_requests / n, 3),
        "auth_requests": auth_requests,
        "requests_by_route": by_route,
        "connections_opened": after["connections_opened"] - before["connections_opened"] - 1,
        "peak_connections": after["peak_connections"],
        "tokens_issued": after["tokens_issued"],
        "peak_active_runs": after["peak_active_runs"],
        "matched": matched,
        "lag_ms": _summary(lags),
        "latency_ms": _summary(latency),
        "ttft_ms": _summary(ttft),
        "ttft_added_ms": _summary(ttft_added),
        "run_ms": _pct(run_ms, 0.5),
        "throughput_per_s": round(len(ok) / out["wall_s"], 1) if out["wall_s"] else None,
    }
    if modes:
        res["modes"] = dict(modes)
    if "client_stats" in out:
        res["client_stats"] = out["client_stats"]
    if "workers" in out:
        res["workers"] = out["workers"]
    if "memprobe" in out:
        res["memory"] = memory_figures(out["memprobe"], out, runs)
    return res


def memory_figures(
    probe: dict[str, Any], out: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Memory per in-flight run from a MemoryProbe report (runners/common.py).

    *In flight* is counted by the emulator: runs created at or before the probe's moment and
    not completed by then. RSS growth is from before the warm-up-free READY to that moment;
    traced bytes (tracemalloc) are what is held then minus before, grouped as agentrun's own
    files, the benchmark runner's records, and everything else by package."""
    res: dict[str, Any] = {"mode": probe.get("mode")}
    if "at_ms" not in probe:
        res["failed"] = probe.get("missed", "the probe took no measurement")
        return res
    at = probe["at_ms"]
    in_flight = 0
    for r in runs:
        done = r.get("completed_at_ms")
        if r["created_at_ms"] <= at and (done is None or done > at):
            in_flight += 1
    res["runs_in_flight"] = in_flight
    res["invocations_in_flight"] = probe.get("in_flight")
    res["settle_s"] = probe.get("settle_s")
    per = max(in_flight, 1)
    res["rss_growth_mb"] = round((probe["rss_at"] - probe["rss_before"]) / 2**20, 1)
    res["rss_kib_per_run"] = round((probe["rss_at"] - probe["rss_before"]) / 1024 / per, 2)
    if "traced_at" in probe:
        res["traced_kib_per_run"] = round(
            (probe["traced_at"] - probe["traced_before"]) / 1024 / per, 2
        )
        groups: collections.Counter[str] = collections.Counter()
        for file, size, _count in probe.get("by_file", []):
            groups[_memory_area(file)] += size
        res["by_area_kib_per_run"] = {
            area: round(size / 1024 / per, 2) for area, size in groups.most_common()
        }
        owners: collections.Counter[str] = collections.Counter()
        for where, size, _count in probe.get("by_owner", []):
            owners[_memory_area(where)] += size
        res["by_owner_kib_per_run"] = {
            area: round(size / 1024 / per, 2) for area, size in owners.most_common()
        }
        # agentrun's share: every block whose allocation passed through agentrun's code.
        res["agentrun_kib_per_run"] = round(
            sum(v for k, v in res["by_owner_kib_per_run"].items() if k.startswith("agentrun/")), 2
        )
        res["agentrun_top_lines"] = [
            [_short_path(where), round(size / per, 1), round(count / per, 2)]
            for where, size, count in probe.get("by_owner", [])
            if "/agentrun/" in where
        ][:30]
        res["top_lines"] = [
            [_short_path(where), round(size / per, 1), round(count / per, 2)]
            for where, size, count in probe.get("by_line", [])
        ]
    return res


def _short_path(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/agentrun/" in path:
        return "agentrun/" + path.rsplit("/agentrun/", 1)[1]
    if "/benchmarks/runners/" in path:
        return "runner/" + path.rsplit("/benchmarks/runners/", 1)[1]
    if "/lib/python" in path:
        return "stdlib/" + path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return path


def _memory_area(path: str) -> str:
    """agentrun/<file>, "the runner's records", or a package / stdlib module."""
    if path == "connection":
        return "pooled connections (TLS, socket, aiohttp protocol buffers)"
    short = _short_path(path)
    head, _, line = short.rpartition(":")
    if head and line.isdigit():
        short = head
    if short.startswith("agentrun/"):
        return short.split(":", 1)[0]
    if short.startswith("runner/"):
        return HARNESS_AREA
    if short.startswith("stdlib/"):
        part = short.removeprefix("stdlib/")
        return "stdlib " + (part.split("/", 1)[0] if "/" in part else part.removesuffix(".py"))
    return short.split("/", 1)[0]


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    out = {k: _pct(values, q) for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    out["max"] = max(values)
    out["min"] = min(values)
    return {k: round(v, 2) for k, v in out.items() if v is not None}


# -- profiles ------------------------------------------------------------------------------------


def summarize_profile(path: pathlib.Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares of the functions in py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        if frames[-1].split(" (", 1)[0] in _IDLE:
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return {"samples": 0}

    def share(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * k / total, 1)) for name, k in c.most_common(top)]

    # Shares by package: where the process's time goes, in the large.
    areas: collections.Counter[str] = collections.Counter()
    for name, count in own.items():
        areas[_area(name)] += count
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "self": share(own),
        "inclusive": share(incl),
        "by_area": share(areas),
    }


_PSTATS_IDLE = frozenset({"<method 'poll' of 'select.epoll' objects>"})


def summarize_pstats(path: pathlib.Path, top: int = 25) -> dict[str, Any]:
    """Own (tottime) and inclusive (cumtime) shares of a cProfile dump, and own time by module.

    Shares are of the profiled total (cProfile's own overhead inflates small Python calls, so
    read them as where the time goes, not as absolute costs)."""
    import pstats

    st = pstats.Stats(str(path))
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    # cProfile's clock is wall time: the event loop's wait in epoll is idle, not CPU. It is
    # taken out of the total, so the shares are of the time the process spent working.
    idle = sum(v[2] for k, v in raw.items() if k[2] in _PSTATS_IDLE)
    total = (sum(v[2] for v in raw.values()) - idle) or 1e-9
    rows = []
    areas: collections.Counter[str] = collections.Counter()
    for (file, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        if func in _PSTATS_IDLE:
            continue
        name = _frame_name(f"{func} ({file}:{line})") if file != "~" else f"{func} (builtin)"
        rows.append((name, nc, tt, ct))
        area = _area(name) if file != "~" else "builtins (C)"
        if "/benchmarks/runners/" in file:
            area = "the runner (harness)"
        if area == "agentrun":
            area = "agentrun/" + name.rsplit("agentrun/", 1)[-1].split(")", 1)[0]
        areas[area] += tt
    by_own = sorted(rows, key=lambda r: -r[2])[:top]
    by_cum = sorted(rows, key=lambda r: -r[3])[:top]
    return {
        "total_s": round(total, 3),
        "idle_s": round(idle, 3),
        "self": [(n, c, round(100 * t / total, 1)) for n, c, t, _ in by_own],
        "inclusive": [(n, c, round(100 * ct / total, 1)) for n, c, _, ct in by_cum],
        "by_area": [(a, round(100 * t / total, 1)) for a, t in areas.most_common(top)],
    }


# Leaf frames that wait rather than compute (py-spy's own idle detection misses some).
_IDLE = frozenset(
    {
        "EpollSelector.select",
        "select",
        "Condition.wait",
        "Event.wait",
        "_worker",
        "readline",
        "sleep",
        "RSSSampler._loop",
    }
)


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)".
    m = re.match(r"(.+?) \((.+?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, file = m.groups()
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/lib/python" in file:
        file = "stdlib/" + file.split("/lib/python", 1)[1].split("/", 1)[-1]
    elif "/agentrun/" in file:
        file = "agentrun/" + file.rsplit("/agentrun/", 1)[1]
    return f"{func} ({file})"


def _area(name: str) -> str:
    file = name.rsplit("(", 1)[-1].rstrip(")")
    if file.startswith("stdlib/"):
        part = file.removeprefix("stdlib/")
        return "stdlib " + (part.split("/", 1)[0] if "/" in part else part.removesuffix(".py"))
    return file.split("/", 1)[0]


# -- main ----------------------------------------------------------------------------------------


def sync_available() -> bool:
    code = "import agentrun; agentrun.Client"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    return res.returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="agentrun only, 1 and 10 invocations; fails (exit 1) on a behaviour check:\n"
        "errors, requests per invocation, token requests (see check())",
    )
    ap.add_argument("--report-only", action="store_true", help="re-render docs from the JSON")
    ap.add_argument("--only", nargs="*", help="run only these clients (names)")
    ap.add_argument(
        "--probes", nargs="*", choices=("rss", "tracemalloc"), help="memory plan: only these probes"
    )
    ap.add_argument("--sizes", help="comma-separated invocation counts to keep, e.g. 1,100")
    ap.add_argument("--no-peers", action="store_true", help="skip LiteLLM and azure-ai-agents")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    ap.add_argument("--out", type=pathlib.Path, help="results JSON (default results/latest.json)")
    ap.add_argument("--no-docs", action="store_true", help="do not regenerate docs/benchmarks.md")
    ap.add_argument(
        "--plan",
        choices=("full", "floor", "scale", "peers", "memory"),
        default="full",
        help="full: everything (`make bench`);\n"
        "floor: only the issue-15 rows (floor, agentrun's entry points, openai -> proxy,\n"
        "  sync) at 100 and 1,000, --reps times (`make bench-floor`);\n"
        "scale: N=10,000 in every mode: floor, agentrun stream, poll, auto, acompletion,\n"
        "  acompletion stream, sync (at most 1,000 worker threads) and the cold\n"
        "  service-principal start, once each (--reps to repeat), then the memory\n"
        "  diagnostic (`make bench-scale`: ~11 + ~12 minutes);\n"
        "peers: floor, agentrun acompletion / acompletion stream / poll, LiteLLM (both)\n"
        "  and azure-ai-agents polling at 100 and 1,000, --reps times (`make bench-peers`);\n"
        "memory: only the memory diagnostic: 10,000 polled runs in flight on an emulator\n"
        "  with 60 s runs, RSS and tracemalloc (what agentrun holds per in-flight run)",
    )
    ap.add_argument(
        "--reps",
        type=int,
        default=None,
        help="repetitions of the 100/1,000 rows (3; the scale plan's 10,000 rows: 1)",
    )
    ap.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the memory diagnostic (part of the full and scale plans)",
    )
    ap.add_argument(
        "--cprofile",
        action="store_true",
        help="after the plan, cProfile the measured phase of floor, agentrun stream and\n"
        "acompletion stream at 1,000 (pstats kept in results/profiles/)",
    )
    args = ap.parse_args(argv)

    import report  # this directory is on sys.path when run as a script

    # A SIGTERM ends the run like Ctrl-C does, so the emulator child is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # The smoke run's figures are not kept (ignored *.tmp): `make test` must not dirty the tree.
    out_path = args.out or (RESULTS / ("smoke.json.tmp" if args.smoke else "latest.json"))
    if args.report_only:
        data = json.loads(out_path.read_text())
        report.write(data, DOCS, RESULTS / "chart.svg")
        print(f"wrote {DOCS.relative_to(ROOT)}")
        return 0

    started = time.time()
    if args.reps is None:
        args.reps = 1 if args.plan == "scale" else 3
    with_peers = not (args.smoke or args.no_peers or args.plan in ("floor", "scale", "memory"))
    memory_wanted = (
        args.plan in ("full", "scale", "memory") and not args.smoke and not args.no_memory
    )
    plan: list[tuple[str, str, int, int]]
    if args.smoke:
        plan = [(c, k, n, 0) for c, k, n in smoke_plan()]
    elif args.plan == "memory":
        plan = []
    elif args.plan == "scale":
        plan = scale_plan(args.reps)
    elif args.plan == "peers":
        plan = floor_plan(args.reps, names=PEERS_PLAN_NAMES, sync=False)
    elif args.plan == "floor":
        # --only names the rows (any client, the floor plan's order otherwise).
        if args.only:
            plan = floor_plan(args.reps, names=tuple(args.only), sync=False)
        else:
            plan = floor_plan(args.reps)
    else:
        # The 100/1,000 rows of every client, --reps times (the peers beside the floor of the
        # same repetition), then the rest once.
        plan = floor_plan(args.reps, names=FLOOR_NAMES + PEER_NAMES)
        seen = {(c, k, n) for c, k, n, _ in plan}
        plan += [(c, k, n, 0) for c, k, n in full_plan() if (c, k, n) not in seen]
    notes: list[str] = []
    if not sync_available():
        plan = [p for p in plan if p[0] != "agentrun-sync"]
        notes.append("agentrun sync was skipped: agentrun.Client is not available in this tree.")
    if not with_peers:
        plan = [p for p in plan if not CLIENTS[p[0]].peer]
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    if args.sizes:
        keep = {int(s) for s in args.sizes.split(",")}
        plan = [p for p in plan if p[2] in keep]
    if with_peers and any(CLIENTS[p[0]].peer for p in plan):
        ensure_peers_venv()
    pyspy = PEERS_VENV / "bin" / "py-spy"
    profiles_wanted: list[tuple[str, str, int]] = []
    full = args.plan == "full" and not args.only
    if with_peers and not args.no_profile and pyspy.exists() and full:
        profiles_wanted = [
            ("agentrun-auto", "new", 1000),
            ("agentrun-stream", "new", 1000),
            ("agentrun-poll", "new", 10000),
            ("litellm", "new", 1000),
            ("litellm-stream", "new", 1000),
            ("sdk-stream", "new", 1000),
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="agentrun-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        emu = Emulator(workdir)
        proxy: Proxy | None = None
        try:
            print(f"emulator at {emu.endpoint} (timings {TIMING})", flush=True)
            if any(CLIENTS[p[0]].family == "proxy" for p in plan):
                proxy = Proxy(emu, workdir)
                print(f"proxy at {proxy.url}", flush=True)
            for i, (name, kind, n, rep) in enumerate(plan, 1):
                client = CLIENTS[name]
                t = time.monotonic()
                try:
                    res = run_one(emu, client, kind, n, workdir, proxy=proxy, rep=rep)
                except Exception as exc:  # recorded, so one broken run cannot lose the rest
                    res = {"client": name, "kind": kind, "n": n, "rep": rep, "failed": repr(exc)}
                res["label"] = client.label
                res["family"] = client.family
                res["streaming"] = client.streaming
                results.append(res)
                print(
                    f"[{i}/{len(plan)}] {line_for(res)}  ({time.monotonic() - t:.1f} s)", flush=True
                )
            for name, kind, n in profiles_wanted:
                client = CLIENTS[name]
                res = run_one(emu, client, kind, n, workdir, profile_with=pyspy)
                key = f"{name}-{kind}-{n}"
                for who, suffix in (("", "profile"), ("emulator during ", "emu-profile")):
                    prof = workdir / f"{key}-r0.{suffix}.txt"  # run_one's tag
                    if not prof.exists():
                        profiles[who + key] = {"failed": res.get("failed", "no profile written")}
                        continue
                    summary = summarize_profile(prof)
                    summary["cpu_s_under_profiler"] = (
                        res.get("cpu_s") if not who else res.get("emulator_cpu_s")
                    )
                    profiles[who + key] = summary
                    print(f"profiled {who}{key}: {summary.get('samples')} samples", flush=True)
            if args.cprofile:
                pdir = RESULTS / "profiles"
                pdir.mkdir(parents=True, exist_ok=True)
                for name in ("floor", "agentrun-stream", "agentrun-acompletion-stream"):
                    path = pdir / f"{name}-new-1000.pstats"
                    res = run_one(emu, CLIENTS[name], "new", 1000, workdir, cprofile=path)
                    summary = summarize_pstats(path) if path.exists() else {}
                    summary["cpu_s_under_profiler"] = res.get("cpu_s")
                    summary["failed"] = res.get("failed")
                    profiles[f"cProfile {name}-new-1000"] = summary
                    print(f"cProfiled {name}: cpu {res.get('cpu_s')} s", flush=True)
        finally:
            if proxy is not None:
                proxy.stop()
            emu.stop()
        memory = run_memory(workdir / "memory", args.only, args.probes) if memory_wanted else []
    data = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "duration_s": round(time.time() - started, 1),
            "smoke": args.smoke,
            "machine": machine(),
            "versions": versions(with_peers),
            "settings": {
                "emulator": TIMING | {"tls": True, "agent": AGENT},
                "pool_limit": POOL_LIMIT,
                "memory_emulator": MEMORY_TIMING | {"n": MEMORY_N},
                "warmup": "one invocation before measuring (except the SP cold run)",
            },
            "clients": {c.name: {"label": c.label, "note": c.note} for c in CLIENTS.values()},
            "notes": notes,
            "reps": 1 if args.smoke else args.reps,
            "plan": "smoke" if args.smoke else args.plan,
            "command": "python benchmarks/bench.py " + " ".join(argv or sys.argv[1:]),
        },
        "results": results,
        "memory": memory,
        "profiles": profiles,
    }
    out_path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")
    if not args.smoke and not args.no_docs:
        report.write(data, DOCS, RESULTS / "chart.svg")
        print(f"wrote {DOCS.relative_to(ROOT)}")
    if not args.smoke and full:  # the Ray row: 20,000 calls, local Ray vs one process
        subprocess.run([sys.executable, str(HERE / "bench_ray.py")], check=False)
        subprocess.run([sys.executable, str(HERE / "bench_v2.py")], check=False)  # v2 rows
    problems = check(results, smoke=args.smoke)
    problems += [
        f"memory diagnostic {m['client']} ({m.get('memory', {}).get('mode')}): "
        f"{m.get('failed') or m['memory']['failed']}"
        for m in memory
        if "failed" in m or "failed" in m.get("memory", {})
    ]
    for p in problems:
        print("PROBLEM: " + p, flush=True)
    # The smoke run guards behaviour: any problem fails it. The other runs report problems
    # (they are in the JSON and the docs) and fail only when nothing was measured.
    if args.smoke:
        return smoke_exit(problems)
    return 0 if any("failed" not in r for r in results) or memory else 1


def smoke_exit(problems: list[str]) -> int:
    """`make bench-smoke`'s verdict: say which checks failed (on stderr too) and return 1,
    or say ok and return 0."""
    if not problems:
        print("bench-smoke: ok (0 errors, requests per invocation and token requests as expected)")
        return 0
    print(f"bench-smoke FAILED: {len(problems)} behaviour check(s):", file=sys.stderr)
    for p in problems:
        print("  - " + p, file=sys.stderr)
    return 1


def run_memory(
    workdir: pathlib.Path, only: list[str] | None, probes: list[str] | None = None
) -> list[dict[str, Any]]:
    """The memory diagnostic (MEMORY_PLAN), on an emulator of its own with long runs."""
    workdir.mkdir(parents=True, exist_ok=True)
    out: list[dict[str, Any]] = []
    emu = Emulator(workdir, MEMORY_TIMING)
    try:
        print(f"memory diagnostic: emulator at {emu.endpoint} ({MEMORY_TIMING})", flush=True)
        for name, probe in MEMORY_PLAN:
            if (only and name not in only) or (probes and probe not in probes):
                continue
            t = time.monotonic()
            try:
                res = run_one(
                    emu, CLIENTS[name], "new", MEMORY_N, workdir, extra_cfg={"memprobe": probe}
                )
            except Exception as exc:
                res = {"client": name, "kind": "new", "n": MEMORY_N, "failed": repr(exc)}
            res["label"] = CLIENTS[name].label
            res["probe"] = probe
            out.append(res)
            mem = res.get("memory") or {}
            print(
                f"memory {name} ({probe}): ok={res.get('ok')} "
                f"runs in flight={mem.get('runs_in_flight')} "
                f"RSS KiB/run={mem.get('rss_kib_per_run')} "
                f"traced KiB/run={mem.get('traced_kib_per_run')} "
                f"agentrun KiB/run={mem.get('agentrun_kib_per_run')} "
                f"{res.get('failed') or mem.get('failed') or ''}"
                f"  ({time.monotonic() - t:.1f} s)",
                flush=True,
            )
    finally:
        emu.stop()
    harness_share(out)
    return out


def harness_share(rows: list[dict[str, Any]]) -> None:
    """Say in each RSS row which part of it is the benchmark's, not agentrun's.

    The RSS probe cannot tell owners apart; the tracemalloc probe of the same client can: the
    runner's own blocks per run in flight (its record dict, its task and `invoke` coroutine
    per invocation, and the coroutine object of the agentrun call itself, which is allocated
    at the runner's call line and so counted here although agentrun owns it). Each RSS row
    gets `harness_kib_per_run` from its client's tracemalloc row and
    `rss_kib_per_run_less_harness` (RSS per run minus that), when both rows measured."""
    traced = {}
    for r in rows:
        mem = r.get("memory") or {}
        if r.get("probe") == "tracemalloc" and "by_owner_kib_per_run" in mem:
            traced[r["client"]] = mem["by_owner_kib_per_run"].get(HARNESS_AREA, 0.0)
    for r in rows:
        mem = r.get("memory") or {}
        if r.get("probe") != "rss" or "rss_kib_per_run" not in mem or r["client"] not in traced:
            continue
        mem["harness_kib_per_run"] = traced[r["client"]]
        mem["rss_kib_per_run_less_harness"] = round(mem["rss_kib_per_run"] - traced[r["client"]], 2)
        print(
            f"memory {r['client']} (rss): {mem['rss_kib_per_run']} KiB/run, of which the "
            f"benchmark runner's own records {mem['harness_kib_per_run']} KiB/run (traced); "
            f"without them {mem['rss_kib_per_run_less_harness']} KiB/run",
            flush=True,
        )


def line_for(res: dict[str, Any]) -> str:
    head = f"{res['client']:<22} {res['kind']:<8} n={res['n']:<6}"
    if "failed" in res:
        return head + " FAILED: " + res["failed"][:300]
    lag = (res.get("lag_ms") or {}).get("p50")
    return (
        head + f" ok={res['ok']:<6} wall={res['wall_s']:.2f}s cpu/inv={res['cpu_ms_per_inv']:.2f}ms"
        f" req/inv={res['requests_per_inv']:.2f} conns={res['connections_opened']}"
        f" tokens={res['tokens_issued']} lag50={lag}ms"
    )


STREAMED = ("floor", "agentrun-stream", "agentrun-acompletion-stream")


def check(results: list[dict[str, Any]], *, smoke: bool) -> list[str]:
    """What makes the run invalid (behaviour, never speed); one message per broken rule.

    Every run: no failed runner, every invocation answered, every answer matched with an
    emulator run. With `smoke` (`make bench-smoke`) also the request and token counts:
    a streamed invocation (a streaming client, or a row whose invocations all chose
    `stream`) is exactly 1 request; any other is at most POLL_REQUESTS_BOUND; the cold
    service-principal row made exactly 1 token request and every other row none; and the
    smoke plan's cold service-principal row is there at all."""
    problems = []
    for r in results:
        tag = f"{r['client']} {r['kind']} n={r['n']}"
        if "failed" in r:
            problems.append(f"{tag}: the runner failed: {r['failed'][:500]}")
            continue
        if r["ok"] != r["n"]:
            problems.append(
                f"{tag}: {r['n'] - r['ok']} of {r['n']} invocations failed: {r['errors']}"
            )
        if r["matched"] != r["ok"]:
            problems.append(f"{tag}: only {r['matched']} of {r['ok']} runs matched the emulator's")
        if not smoke:
            continue
        modes = r.get("modes") or {}
        streamed = r["client"] in STREAMED or (bool(modes) and set(modes) == {"stream"})
        if streamed and r["requests_per_inv"] != 1:
            problems.append(
                f"{tag}: {r['requests_per_inv']:g} requests per streamed invocation, want exactly 1"
            )
        elif not streamed and r["requests_per_inv"] > POLL_REQUESTS_BOUND:
            problems.append(
                f"{tag}: {r['requests_per_inv']:g} requests per polled invocation, want at "
                f"most {POLL_REQUESTS_BOUND:g} (POLL_REQUESTS_BOUND)"
            )
        # Token requests: one for the cold service-principal run (all invocations race for
        # it), none for the static token.
        want_tokens = 1 if r["client"] == "agentrun-sp" else 0
        if r["tokens_issued"] != want_tokens:
            problems.append(f"{tag}: {r['tokens_issued']} token requests, want {want_tokens}")
    if smoke and not any(r["client"] == "agentrun-sp" for r in results):
        problems.append("no cold service-principal row (agentrun-sp) was run")
    return problems


if __name__ == "__main__":
    sys.exit(main())
