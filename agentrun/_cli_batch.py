"""`agentrun batch IN.jsonl -o OUT.jsonl`: many invocations, live progress, resumable.

The engine is `agentrun._batch`; this module parses the flags, draws the live view (rich, on a
terminal) or plain progress lines, prints the summary and maps the outcome to an exit code.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Any, TextIO

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agentrun._batch import (
    BatchConfig,
    BatchError,
    BatchProgress,
    BatchRunner,
    BatchSummary,
    to_model,
)
from agentrun._cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    add_connection_arguments,
    check_connection_arguments,
    fail,
    sigint_cancels,
)
from agentrun._cli_run import MODES, describe_error, open_client
from agentrun._errors import ConfigurationError

__all__ = ["configure", "main", "run_with_view"]

PROG = "agentrun batch"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run every line of IN.jsonl (chat requests, or OpenAI Batch API lines) against Azure AI "
        "Foundry agents, at most --concurrency at once, appending one result line per item to "
        "OUT.jsonl. Rerun with the same -o to resume: items that have a line are skipped "
        "(failed ones too, unless --retry-failed). Exit codes: 0 all succeeded, 1 some item "
        "failed, 2 usage error (bad flags, duplicate custom_ids), 3 authentication or "
        "configuration error, 130 interrupted."
    )
    parser.add_argument("input", metavar="IN.jsonl", type=pathlib.Path, help="input file")
    parser.add_argument(
        "-o", "--output", metavar="OUT.jsonl", type=pathlib.Path, required=True,
        help="output file (appended to; resumes when it exists)",
    )  # fmt: skip
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--agent", metavar="ID", help="agent for lines without a model")
    model.add_argument(
        "--model", metavar="MODEL", help="azure_ai/agents/ID for lines without a model"
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, metavar="N", help="runs at once (100)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="per item: cancel a run after S seconds (600)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="auto",
        help="stream, poll, or auto: stream while every run in flight fits the pool, else poll",
    )
    parser.add_argument(
        "--connections", type=int, default=100, metavar="N", help="connection pool size (100)"
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run the items that failed before again"
    )
    parser.add_argument(
        "--drop-params",
        action="store_true",
        help="leave out OpenAI parameters the Agent Service cannot honour instead of failing",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "plain", "none"),
        default="auto",
        help="live view on a terminal, plain lines otherwise (auto)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between plain progress lines (5)",
    )
    parser.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray Data: a local Ray, or the cluster at ADDRESS (auto, ray://host:10001); "
        "needs agentrun[ray]",
    )  # fmt: skip
    parser.add_argument(
        "--ray-actors", type=int, default=2, metavar="N",
        help="with --ray: actors, each with one client and --concurrency/N runs at once (2)",
    )  # fmt: skip
    add_connection_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        return fail(PROG, EXIT_USAGE, "--concurrency must be at least 1")
    if args.connections < 1:
        return fail(PROG, EXIT_USAGE, "--connections must be at least 1")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        return fail(PROG, EXIT_USAGE, "--timeout must be a positive number of seconds")
    if not args.progress_interval > 0:
        return fail(PROG, EXIT_USAGE, "--progress-interval must be positive")
    problem = check_connection_arguments(args)
    if problem:
        return fail(PROG, EXIT_USAGE, problem)
    default_model = None
    try:
        if args.agent or args.model:
            default_model = to_model(args.agent or args.model)
    except ConfigurationError as exc:
        return fail(PROG, EXIT_USAGE, str(exc))
    config = BatchConfig(
        input_path=args.input,
        output_path=args.output,
        default_model=default_model,
        concurrency=args.concurrency,
        timeout=args.timeout,
        mode=args.mode,
        retry_failed=args.retry_failed,
        drop_params=args.drop_params,
    )
    runner = BatchRunner(config)
    try:
        runner.prepare()
    except BatchError as exc:
        return fail(PROG, EXIT_USAGE, str(exc))
    except OSError as exc:
        return fail(PROG, EXIT_USAGE, f"cannot read {exc.filename}: {exc.strerror}")
    r = runner.resume
    if r.torn_bytes:
        print(
            f"{PROG}: cut off a torn last line ({r.torn_bytes} bytes) from {args.output}; "
            "its item runs again",
            file=sys.stderr,
        )
    if args.ray is not None:
        from agentrun._cli_ray import main_ray

        return main_ray(args, runner)
    try:
        code: int = anyio.run(_main, args, runner, backend="asyncio")
    except KeyboardInterrupt:
        return fail(PROG, EXIT_INTERRUPTED, "interrupted")
    return code


async def _main(args: argparse.Namespace, runner: BatchRunner) -> int:
    view = args.progress
    if view == "auto":
        view = "live" if sys.stderr.isatty() else "plain"
    try:
        async with open_client(
            args,
            pool_limit=args.connections,
            mode=args.mode,
            timeout=args.timeout or 600.0,
            announce=lambda m: print(f"{PROG}: {m}", file=sys.stderr),
        ) as client:
            summary = await run_with_view(
                runner, client, view=view, interval=args.progress_interval
            )
    except Exception as exc:
        code, message = describe_error(exc)
        if runner.progress.done:
            print_summary(runner.summary(), args.output)
        return fail(PROG, code, message)
    print_summary(summary, args.output)
    if summary.interrupted:
        return fail(
            PROG,
            EXIT_INTERRUPTED,
            "interrupted: runs in flight were cancelled; rerun the same command to resume",
        )
    if not summary.ok:
        hint = "rerun with --retry-failed to run the failed items again"
        return fail(
            PROG, EXIT_RUN_FAILED, f"{summary.failed + summary.skipped_failed} failed; {hint}"
        )
    return EXIT_OK


async def run_with_view(
    runner: BatchRunner,
    client: Any,
    *,
    view: str = "live",
    interval: float = 5.0,
    console: Console | None = None,
) -> BatchSummary:
    """Run the batch with a live view ("live"), plain lines on stderr ("plain") or nothing;
    Ctrl-C cancels it (the summary then says interrupted)."""
    progress = runner.progress
    err = sys.stderr

    def on_interrupt() -> None:
        progress.interrupted = True
        print(
            f"\n{PROG}: interrupted: cancelling {progress.in_progress} runs in flight "
            "(Ctrl-C again to quit at once)",
            file=err,
            flush=True,
        )

    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope, sigint_cancels(scope, on_interrupt):
            try:
                if view == "live":
                    live_console = console or Console(stderr=True)
                    with Live(
                        get_renderable=lambda: render_progress(progress),
                        console=live_console,
                        refresh_per_second=8,
                        transient=False,
                    ):
                        await runner.run(client)
                else:
                    if view == "plain":
                        tg.start_soon(_plain_lines, progress, interval, err)
                    await runner.run(client)
            except Exception as exc:  # raised below, outside the task group
                error = exc
        tg.cancel_scope.cancel()
    if error is not None:
        raise error
    if view == "plain":
        print(progress_line(progress), file=err, flush=True)
    return runner.summary()


async def _plain_lines(progress: BatchProgress, interval: float, out: TextIO) -> None:
    while True:
        await anyio.sleep(interval)
        print(progress_line(progress), file=out, flush=True)


def _eta(progress: BatchProgress) -> str:
    eta = progress.eta()
    if eta is None:
        return "?"
    return f"{eta:.0f}s" if eta < 120 else f"{eta / 60:.1f}min"


def progress_line(p: BatchProgress) -> str:
    """One plain progress line."""
    line = (
        f"{PROG}: {p.done}/{p.to_run} done ({p.completed} completed, {p.failed} failed), "
        f"{p.in_progress} in progress, {p.queued} queued, {p.rate():.1f}/s, "
        f"ETA {_eta(p)}, {p.elapsed:.1f}s elapsed"
    )
    if p.skipped_ok or p.skipped_failed:
        line += f"; skipped {p.skipped_ok + p.skipped_failed} with a line already"
    return line


def render_progress(p: BatchProgress) -> RenderableType:
    """The live view: a bar, then items by state, rate and ETA."""
    bar = ProgressBar(total=max(p.to_run, 1), completed=p.done, width=50)
    counts = Table.grid(padding=(0, 2))
    for _ in range(6):
        counts.add_column(justify="right")
    counts.add_row(
        Text("queued", style="dim"),
        Text("in progress", style="cyan"),
        Text("completed", style="green"),
        Text("failed", style="red"),
        Text("rate", style="dim"),
        Text("ETA", style="dim"),
    )
    counts.add_row(
        str(p.queued),
        str(p.in_progress),
        str(p.completed),
        str(p.failed),
        f"{p.rate():.0f}/s",
        _eta(p),
    )
    head = Text.assemble(
        ("agentrun batch ", "bold"),
        f"{p.done}/{p.to_run}  ",
        (f"{p.elapsed:.1f}s", "dim"),
    )
    if p.skipped_ok or p.skipped_failed:
        head.append(f"  ({p.skipped_ok + p.skipped_failed} already in the output)", style="dim")
    if p.interrupted:
        head.append("  interrupted: cancelling runs in flight", style="bold red")
    # A bar narrower than the terminal ends without a line break; a one-cell grid gives it one.
    bar_line = Table.grid()
    bar_line.add_row(bar)
    return Group(head, bar_line, counts)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def summary_lines(s: BatchSummary, output: pathlib.Path | str | None = None) -> list[str]:
    """The end summary as plain lines."""
    lines = [
        f"items: {s.total} in the input; ran {s.ran}: {s.completed} completed, {s.failed} failed"
        f" in {s.elapsed:.1f}s ({s.ran / s.elapsed if s.elapsed > 0 else 0:.0f}/s)",
    ]
    if s.skipped_ok or s.skipped_failed:
        lines.append(
            f"skipped (already in the output): {s.skipped_ok} succeeded, {s.skipped_failed} failed"
        )
    if s.interrupted:
        lines.append("interrupted: items without a line run when you rerun the same command")
    if s.failures:
        lines.append("failures by type:")
        lines += [f"  {kind}: {n}" for kind, n in s.failures.items()]
    if s.state_times:
        lines.append("time per state (p50 / p95):")
        width = max(len(k) for k in s.state_times)
        for state, q in s.state_times.items():
            lines.append(f"  {state:<{width}}  {_ms(q['p50']):>9} / {_ms(q['p95'])}")
    runs = max(s.runs_measured, 1)
    lines.append(
        f"HTTP requests: {s.http_requests} in all; per run {s.requests_per_run:.2f} "
        f"(max {s.requests_max}) over {s.runs_measured if s.runs_measured else 0} runs"
        if runs
        else f"HTTP requests: {s.http_requests}"
    )
    lines.append(f"token requests: {s.token_requests}")
    lines.append(
        f"tokens used: {s.total_tokens} ({s.prompt_tokens} prompt + "
        f"{s.completion_tokens} completion)"
    )
    if output is not None:
        lines.append(f"output: {output} ({s.output_lines} lines written now)")
    return lines


def print_summary(s: BatchSummary, output: pathlib.Path | str | None = None) -> None:
    print("\n".join(summary_lines(s, output)), flush=True)
