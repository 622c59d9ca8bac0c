"""The benchmark report renderer (benchmarks/report.py) on fabricated results.

Pins that docs/benchmarks.md shows the 10,000-invocation rows with CPU as a ratio to the floor
at 10,000, memory per in-flight run from the memory diagnostic, and agentrun's CPU over each
peer's from the same repetition. The figures are made up; the arithmetic on them is what is
checked.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import pytest

REPORT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentrun_report_under_test", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FAMILY = {"floor": "floor", "litellm": "litellm", "litellm-stream": "litellm", "sdk-poll": "sdk"}


def row(client: str, n: int, cpu: float, rep: int = 0, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "client": client,
        "label": client,
        "family": FAMILY.get(client, "agentrun"),
        "kind": "new",
        "n": n,
        "rep": rep,
        "ok": n,
        "errors": {},
        "wall_s": 2.0,
        "cpu_ms_per_inv": cpu,
        "peak_rss_mb": 90.0,
        "phase_growth_mb": 40.0,
        "mem_kb_per_inv": 4.1,
        "requests_per_inv": 1.0,
        "requests_by_route": {"POST /threads/runs": n},
        "connections_opened": 99,
        "peak_connections": 101,
        "tokens_issued": 0,
        "peak_active_runs": n,
        "lag_ms": {"p50": 3.0, "p99": 9.0},
        "latency_ms": {"p50": 1300.0, "p99": 1400.0},
        "ttft_added_ms": None,
        "load": {"at_go": [1.5, 1.0, 1.0], "at_end": [1.6, 1.0, 1.0]},
    }
    r.update(over)
    return r


def data() -> dict[str, Any]:
    results = []
    for rep in (0, 1):
        results += [
            row("floor", 100, 0.5, rep),
            row("agentrun-acompletion", 100, 1.0, rep),
            row("litellm", 100, 4.0 if rep == 0 else 5.0, rep),
            row("agentrun-poll", 100, 0.8, rep),
            row("sdk-poll", 100, 3.2, rep),
        ]
    results += [
        row("floor", 10000, 0.4),
        row("agentrun-poll", 10000, 1.0, requests_per_inv=3.02, modes={"poll": 10000}),
        row("agentrun-sp", 10000, 1.2, tokens_issued=1),
        row("agentrun-stream", 10000, 0.6, ok=9998, errors={"TimeoutError": 2}),
    ]
    memory = [
        {
            "client": "agentrun-poll",
            "label": "agentrun poll",
            "probe": "rss",
            "memory": {"mode": "rss", "runs_in_flight": 10000, "rss_kib_per_run": 21.5},
        },
        {
            "client": "agentrun-poll",
            "label": "agentrun poll",
            "probe": "tracemalloc",
            "n": 10000,
            "ok": 10000,
            "memory": {
                "mode": "tracemalloc",
                "runs_in_flight": 10000,
                "rss_kib_per_run": 14.5,
                "traced_kib_per_run": 12.0,
                "agentrun_kib_per_run": 7.5,
                "by_owner_kib_per_run": {
                    "agentrun/_driver.py": 5.0,
                    "agentrun/_reply.py": 2.5,
                    "pooled connections (TLS, socket, aiohttp protocol buffers)": 2.5,
                    "the runner's own records (benchmarks/runners)": 1.5,
                },
                "agentrun_top_lines": [["agentrun/_driver.py:130", 760.0, 2.0]],
            },
        },
        {
            "client": "agentrun-acompletion",
            "label": "agentrun acompletion",
            "probe": "rss",
            "memory": {"mode": "rss", "failed": "an invocation finished before memory settled"},
        },
    ]
    return {
        "meta": {
            "date": "2026-11-29 21:00 UTC",
            "duration_s": 600.0,
            "command": "python benchmarks/bench.py --plan scale",
            "reps": 2,
            "machine": {"cpu": "x", "cores": 2, "memory_gb": 8, "os": "Linux", "python": "3.12"},
            "versions": {"agentrun venv: agentrun": "0.1"},
            "settings": {
                "emulator": {"queue_delay": 0.05, "run_duration": 1.0, "delta_interval": 0.01},
                "pool_limit": 100,
                "warmup": "one invocation",
                "memory_emulator": {"run_duration": 40.0, "n": 10000},
            },
            "clients": {},
            "notes": [],
        },
        "results": results,
        "memory": memory,
        "profiles": {},
    }


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_scale_rows_show_errors_and_cpu_over_the_floor_at_10000(report: ModuleType) -> None:
    """Each 10,000 row shows its errors, requests per call and CPU over the floor's at 10,000
    of the same repetition."""
    text = section(report.render(data()), "## 10,000 concurrent invocations")
    poll = next(line for line in text.splitlines() if line.startswith("| agentrun-poll |"))
    assert "| 10,000 | 0 | 3.02 |" in poll
    assert "| 2.50 |" in poll  # 1.0 / 0.4
    stream = next(line for line in text.splitlines() if line.startswith("| agentrun-stream |"))
    assert "| 9,998 | 2 |" in stream
    sp = next(line for line in text.splitlines() if line.startswith("| agentrun-sp |"))
    assert "| 3.00 | 1 |" in sp  # 1.2 / 0.4, then one token request
    assert "at most 1,000 worker threads" in text


def test_memory_section_splits_agentrun_from_connections_and_runner(report: ModuleType) -> None:
    """The memory table gives RSS and traced KiB per in-flight run, agentrun's share apart from
    the pooled connections and the runner's records, and says when a probe missed."""
    doc = report.render(data())
    text = section(doc, "## Memory per in-flight run")
    line = next(x for x in text.splitlines() if x.startswith("| agentrun poll | tracemalloc"))
    assert line == "| agentrun poll | tracemalloc | 10,000 | – | 12.0 | 7.5 | 2.5 | 1.5 | 0.5 |"
    rss = next(x for x in text.splitlines() if x.startswith("| agentrun poll | rss"))
    assert rss == "| agentrun poll | rss | 10,000 | 21.5 | – | – | – | – | – |"
    assert "failed: an invocation finished before memory settled" in text
    assert "`agentrun/_driver.py:130` | 760 | 2.00 |" in text
    targets = section(doc, "## Targets")
    assert "< 20 KiB per in-flight run held by agentrun" in targets
    assert "7.5 KiB (all traced: 12.0 KiB) | yes |" in targets
    assert "< 20 KiB RSS per in-flight run, whole process" in targets
    assert "| 21.5 KiB | **no** |" in targets


def test_peer_ratios_are_taken_rep_by_rep(report: ModuleType) -> None:
    """agentrun / peer CPU is divided within each repetition, then summarised as median
    [min–max]."""
    text = section(report.render(data()), "## agentrun against the peers, side by side")
    acompletion = next(x for x in text.splitlines() if "LiteLLM `acompletion`" in x)
    assert acompletion.endswith("| 0.23 [0.20–0.25] |")  # 1/4 and 1/5
    poll = next(x for x in text.splitlines() if "azure-ai-agents polling" in x)
    assert poll.endswith("| 0.25 [0.25–0.25] |")
    assert "stream / LiteLLM" not in text  # no streamed peer rows were fabricated
