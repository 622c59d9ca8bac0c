"""`agentrun demo` as a real subprocess: the seed's examples, then a batch with a summary."""

from __future__ import annotations

import os
import subprocess
import sys


def test_demo_runs_the_examples_and_a_batch() -> None:
    """The demo exits 0 and shows each seed example's result (the thread remembers Alice,
    instructions make the reply concise) and the batch summary; a smaller --batch-size keeps
    this test fast while the default stays 2,000 at concurrency 500."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONWARNINGS="error", COLUMNS="120")
    proc = subprocess.run(
        [sys.executable, "-m", "agentrun.cli", "demo", "--batch-size", "300"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    for needle in (
        "1. Basic agent completion",
        'You asked: "Explain machine learning in simple terms"',
        "Usage: Usage(prompt_tokens=",
        "2. Streaming",
        "Nice to meet you, Alice!",
        "Your name is Alice.",
        "Noted: Analyze this data and provide insights.",
        "300 invocations, 500 at a time",
        "ran 300: 300 completed, 0 failed",
        "p50 / p95",
        "token requests: 1",
    ):
        assert needle in out, needle
    assert "agentrun batch: 300/300 done" in proc.stderr


def test_demo_defaults_are_the_documented_batch() -> None:
    """The default tour is a batch of 2,000 at concurrency 500."""
    import argparse

    from agentrun import _demo

    parser = argparse.ArgumentParser()
    _demo.configure(parser)
    args = parser.parse_args([])
    assert (args.batch_size, args.concurrency) == (2000, 500)
