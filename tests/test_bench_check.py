"""The benchmark harness's behaviour checks (benchmarks/bench.py `check`, `make bench-smoke`).

These feed the checker fabricated result rows, shaped like the harness's own, and pin which
rows it accepts and which it rejects with a message naming the broken rule. They test the
checker, not agentrun: the smoke run itself measures agentrun against the emulator.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agentrun_bench_under_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def row(client: str, *, n: int = 10, kind: str = "new", **over: Any) -> dict[str, Any]:
    """One healthy result row, as bench.figures() makes it; `over` breaks one thing."""
    streamed = client in ("floor", "agentrun-stream", "agentrun-acompletion-stream")
    r: dict[str, Any] = {
        "client": client,
        "kind": kind,
        "n": n,
        "ok": n,
        "matched": n,
        "errors": {},
        "requests_per_inv": 1.0 if streamed else 3.0,
        "tokens_issued": 1 if client == "agentrun-sp" else 0,
    }
    r.update(over)
    if "matched" not in over:
        r["matched"] = r["ok"]
    return r


def healthy() -> list[dict[str, Any]]:
    return [
        row("floor"),
        row("agentrun-stream"),
        row("agentrun-stream", kind="continue"),
        row("agentrun-acompletion-stream"),
        row("agentrun-poll"),
        row("agentrun-poll", kind="continue"),
        row("agentrun-auto", requests_per_inv=1.0, modes={"stream": 10}),
        row("agentrun-acompletion", requests_per_inv=1.0),
        row("agentrun-sp", requests_per_inv=1.0, modes={"stream": 10}),
    ]


def test_healthy_smoke_rows_pass(bench: ModuleType) -> None:
    """Rows with every invocation answered, 1 request per stream, 3 per poll and one token
    request for the cold service principal raise no problem."""
    assert bench.check(healthy(), smoke=True) == []


@pytest.mark.parametrize(
    ("client", "over", "expected"),
    [
        ("agentrun-poll", {"ok": 9, "errors": {"TimeoutError": 1}}, "1 of 10 invocations failed"),
        ("agentrun-stream", {"matched": 8}, "only 8 of 10 runs matched"),
        ("agentrun-stream", {"requests_per_inv": 2.0}, "2 requests per streamed invocation"),
        ("floor", {"requests_per_inv": 1.1}, "1.1 requests per streamed invocation"),
        ("agentrun-poll", {"requests_per_inv": 5.5}, "5.5 requests per polled invocation"),
        ("agentrun-sp", {"tokens_issued": 2}, "2 token requests, want 1"),
        ("agentrun-sp", {"tokens_issued": 0}, "0 token requests, want 1"),
        ("agentrun-auto", {"tokens_issued": 1}, "1 token requests, want 0"),
        ("agentrun-poll", {"failed": "the runner never became ready"}, "the runner failed"),
    ],
)
def test_one_broken_rule_is_reported(
    bench: ModuleType, client: str, over: dict[str, Any], expected: str
) -> None:
    """Breaking one rule in one row yields exactly one problem, naming the row and the rule."""
    rows = healthy()
    index = next(i for i, r in enumerate(rows) if r["client"] == client)
    rows[index] = row(client, **over) if "failed" not in over else {**rows[index], **over}
    problems = bench.check(rows, smoke=True)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{client} new n=10: ")
    assert expected in problems[0]


def test_a_row_that_chose_stream_must_take_one_request(bench: ModuleType) -> None:
    """An auto row whose invocations all streamed is held to exactly 1 request each, not to
    the polling bound."""
    rows = healthy()
    rows[6] = row("agentrun-auto", requests_per_inv=3.0, modes={"stream": 10})
    problems = bench.check(rows, smoke=True)
    assert problems == [
        "agentrun-auto new n=10: 3 requests per streamed invocation, want exactly 1"
    ]


def test_polled_bound_is_the_named_constant(bench: ModuleType) -> None:
    """A polled row exactly at POLL_REQUESTS_BOUND passes; just above it fails, and the
    message names the constant."""
    bound = bench.POLL_REQUESTS_BOUND
    rows = healthy()
    rows[4] = row("agentrun-poll", requests_per_inv=bound)
    assert bench.check(rows, smoke=True) == []
    rows[4] = row("agentrun-poll", requests_per_inv=bound + 0.01)
    (problem,) = bench.check(rows, smoke=True)
    assert "POLL_REQUESTS_BOUND" in problem


def test_missing_service_principal_row_fails(bench: ModuleType) -> None:
    """A smoke run without the cold service-principal row cannot pass: the one-token check
    would silently not have run."""
    rows = [r for r in healthy() if r["client"] != "agentrun-sp"]
    assert bench.check(rows, smoke=True) == ["no cold service-principal row (agentrun-sp) was run"]


def test_outside_smoke_only_errors_count(bench: ModuleType) -> None:
    """A full (timed) run reports errors and unmatched runs, but not request or token
    counts: those are the smoke run's behaviour checks."""
    rows = [row("agentrun-poll", requests_per_inv=7.0), row("agentrun-stream", ok=9)]
    problems = bench.check(rows, smoke=False)
    assert len(problems) == 1
    assert "1 of 10 invocations failed" in problems[0]


def test_smoke_exit_code_follows_the_checks(bench: ModuleType) -> None:
    """The smoke run's exit status is non-zero exactly when a check failed."""
    assert bench.smoke_exit([]) == 0
    assert bench.smoke_exit(["agentrun-poll new n=10: 1 of 10 invocations failed: {}"]) == 1


def test_runs_in_flight_are_counted_at_the_probe_moment(bench: ModuleType) -> None:
    """Memory per in-flight run divides by the runs the emulator had created and not yet
    completed when the probe measured, not by every invocation."""
    runs = [
        {"created_at_ms": 100.0, "completed_at_ms": 5000.0},
        {"created_at_ms": 200.0, "completed_at_ms": None},
        {"created_at_ms": 300.0, "completed_at_ms": 900.0},  # finished before the probe
        {"created_at_ms": 1500.0, "completed_at_ms": 6000.0},  # created after it
    ]
    probe = {
        "mode": "tracemalloc",
        "at_ms": 1000.0,
        "in_flight": 4,
        "rss_before": 0,
        "rss_at": 2 * 30 * 1024,
        "traced_before": 0,
        "traced_at": 2 * 12 * 1024,
        "by_owner": [
            ["/x/agentrun/_driver.py:130", 2 * 6 * 1024, 4],
            ["connection", 2 * 4 * 1024, 2],
            ["/x/benchmarks/runners/common.py:74", 2 * 2 * 1024, 2],
        ],
    }
    mem = bench.memory_figures(probe, {}, runs)
    assert mem["runs_in_flight"] == 2
    assert mem["rss_kib_per_run"] == 30.0
    assert mem["traced_kib_per_run"] == 12.0
    assert mem["agentrun_kib_per_run"] == 6.0
    assert mem["agentrun_top_lines"] == [["agentrun/_driver.py:130", 6144.0, 2.0]]


def test_a_probe_that_missed_is_a_failure(bench: ModuleType) -> None:
    """A probe that never measured (an invocation finished first) is reported as failed,
    never as a figure."""
    mem = bench.memory_figures({"mode": "rss", "missed": "an invocation finished"}, {}, [])
    assert mem == {"mode": "rss", "failed": "an invocation finished"}
