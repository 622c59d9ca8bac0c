"""`agentrun batch --ray [ADDRESS]`: the same batch on Ray Data (`agentrun.ray.run_batch`).

The flags, the input and output files, resume, the progress view and the summary are those of
`agentrun batch` (`_cli_batch`); only the invocations run on Ray actors.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from agentrun._batch import BatchRunner
from agentrun._cli_batch import PROG, print_summary, progress_line, render_progress
from agentrun._cli_common import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, fail
from agentrun._cli_run import describe_error
from agentrun._errors import ConfigurationError

__all__ = ["main_ray"]


def main_ray(args: argparse.Namespace, runner: BatchRunner) -> int:
    """Run the prepared batch on Ray: a local one when `args.ray` is "local", else the
    cluster at that address. Exit codes as `agentrun batch`."""
    try:
        from agentrun import ray as agentrun_ray
    except ImportError as exc:
        return fail(PROG, EXIT_USAGE, str(exc))
    if args.ray_actors < 1:
        return fail(PROG, EXIT_USAGE, "--ray-actors must be at least 1")
    address = None if args.ray == "local" else args.ray
    view = args.progress
    if view == "auto":
        view = "live" if sys.stderr.isatty() else "plain"
    with _settings(args, agentrun_ray) as settings:
        try:
            settings.check()
        except ConfigurationError as exc:
            return fail(PROG, *describe_error(exc))
        progress = runner.progress
        last = [time.monotonic()]

        def plain() -> None:
            if time.monotonic() - last[0] >= args.progress_interval:
                last[0] = time.monotonic()
                print(progress_line(progress), file=sys.stderr, flush=True)

        live: Any = contextlib.nullcontext()
        if view == "live":
            from rich.console import Console
            from rich.live import Live

            live = Live(
                get_renderable=lambda: render_progress(progress),
                console=Console(stderr=True),
                refresh_per_second=8,
            )
        try:
            with live:
                summary = agentrun_ray.run_batch(
                    runner,
                    settings,
                    address=address,
                    actors=args.ray_actors,
                    on_progress=plain if view == "plain" else None,
                )
        except Exception as exc:
            return fail(PROG, *describe_error(exc))
    if view == "plain":
        print(progress_line(progress), file=sys.stderr, flush=True)
    print_summary(summary, args.output)
    if summary.interrupted:
        return fail(PROG, EXIT_INTERRUPTED, "interrupted: rerun the same command to resume")
    if not summary.ok:
        hint = "rerun with --retry-failed to run the failed items again"
        return fail(
            PROG, EXIT_RUN_FAILED, f"{summary.failed + summary.skipped_failed} failed; {hint}"
        )
    return EXIT_OK


@contextlib.contextmanager
def _settings(args: argparse.Namespace, agentrun_ray: Any) -> Iterator[Any]:
    common = {
        "pool_limit": args.connections,
        "mode": args.mode,
        "timeout": args.timeout or 600.0,
    }
    if args.emulator:
        from agentrun.emulator import Emulator

        with Emulator().in_thread() as emu:
            print(f"{PROG}: using the embedded emulator at {emu.endpoint}", file=sys.stderr)
            yield agentrun_ray.ClientSettings(emu.endpoint, api_key=emu.api_key, **common)
        return
    yield agentrun_ray.ClientSettings.from_environment(
        api_base=args.api_base,
        api_key=args.api_key,
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        **common,
    )
