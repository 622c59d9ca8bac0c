"""What every `agentrun` command shares: exit codes, the connection flags, signal handling.

Imports nothing of the client (so the emulator's command can use it too) and no event-loop
library at import time (so `agentrun --help` stays fast). Building a client from the flags is
`agentrun._cli_run.open_client`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    import anyio

__all__ = [
    "EXIT_AUTH_CONFIG",
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RUN_FAILED",
    "EXIT_USAGE",
    "Interrupt",
    "add_connection_arguments",
    "check_connection_arguments",
    "fail",
    "sigint_cancels",
    "stop_on_signals",
]

# -- exit codes (docs/cli.md) -----------------------------------------------------------------

EXIT_OK = 0
#: The run failed, the service refused, a batch had failures; `serve`/`emulator` could not
#: listen.
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
#: Authentication or configuration: credentials, certificates, a bad proxy config.
EXIT_AUTH_CONFIG = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` gives: the reader went away


def fail(prog: str, code: int, message: str) -> int:
    """Print `prog: message` on stderr and return `code` (the command's exit code)."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return code


# -- connection flags (run, batch, demo) ---------------------------------------------------------


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--api-base, the credential flags, --allow-insecure-http and --emulator."""
    group = parser.add_argument_group(
        "connection",
        "Credentials, most specific first: --api-key, then --tenant-id/--client-id/"
        "--client-secret, then env AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, then "
        "env AZURE_AD_TOKEN.",
    )
    group.add_argument(
        "--api-base",
        metavar="URL",
        help="project endpoint, https://<resource>.services.ai.azure.com/api/projects/<project>"
        " (default: env AZURE_AI_API_BASE)",
    )
    group.add_argument("--api-key", metavar="TOKEN", help="a static Entra ID access token")
    group.add_argument("--tenant-id", metavar="ID", help="service principal tenant")
    group.add_argument("--client-id", metavar="ID", help="service principal client (app) id")
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="service principal secret (prefer env AZURE_CLIENT_SECRET: flags show in ps)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow an http:// --api-base on a host other than the loopback (the token then "
        "travels in clear text; also env AGENTRUN_ALLOW_INSECURE_HTTP=1)",
    )
    group.add_argument(
        "--emulator",
        action="store_true",
        help="start a fresh local Agent Service emulator in process for this command and use "
        "it (its threads are gone when the command ends)",
    )


def check_connection_arguments(args: argparse.Namespace) -> str | None:
    """A usage problem with the connection flags, or None."""
    if args.emulator:
        given = [
            flag
            for flag, value in (
                ("--api-base", args.api_base),
                ("--api-key", args.api_key),
                ("--tenant-id", args.tenant_id),
                ("--client-id", args.client_id),
                ("--client-secret", args.client_secret),
            )
            if value
        ]
        if given:
            return f"--emulator brings its own endpoint and credentials; drop {', '.join(given)}"
    return None


# -- signals ------------------------------------------------------------------------------------


class Interrupt:
    """Set by the first Ctrl-C (see `sigint_cancels`)."""

    interrupted = False


@contextlib.contextmanager
def sigint_cancels(
    scope: anyio.CancelScope, on_first: Callable[[], None] | None = None
) -> Iterator[Interrupt]:
    """The first SIGINT or SIGTERM (Ctrl-C; `timeout`, systemd, Kubernetes, Slurm) cancels
    `scope` (so cleanup runs: remote runs are cancelled, files closed); a second one exits
    at once with 130. Call it on the event loop's thread."""
    import asyncio

    state = Interrupt()
    loop = asyncio.get_running_loop()

    def handler() -> None:
        if state.interrupted:
            print("agentrun: interrupted again; exiting now", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        state.interrupted = True
        if on_first is not None:
            on_first()
        scope.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        yield state
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (a server's graceful shutdown), for the block's duration;
    where the loop cannot take signal handlers (Windows) nothing is installed."""
    import asyncio

    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
