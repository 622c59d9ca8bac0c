"""`agentrun run AGENT PROMPT`: one invocation, the reply streamed to stdout as it arrives.

Thread id, run id and usage go to stderr, so stdout holds only the reply (or, with `--json`,
the whole chat completion). Also home of what `run`, `batch` and `demo` share beyond
`_cli_common` (exit codes, connection flags, signals): the client built from the flags (on the
embedded emulator with `--emulator`) and the mapping of errors to exit codes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from agentrun._cli_common import (
    EXIT_AUTH_CONFIG,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    add_connection_arguments,
    check_connection_arguments,
    fail,
    sigint_cancels,
)
from agentrun._errors import (
    AgentRunError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    RunError,
)

__all__ = ["configure", "main"]

MODES = ("auto", "stream", "poll")


# -- shared by run, batch and demo ----------------------------------------------------------


@contextlib.asynccontextmanager
async def open_client(
    args: argparse.Namespace,
    *,
    pool_limit: int = 100,
    mode: str = "auto",
    timeout: float | None = 600.0,
    emulator_settings: Any = None,
    announce: Callable[[str], None] | None = None,
) -> AsyncIterator[Any]:
    """An `AsyncClient` for the flags: on the embedded emulator with `--emulator`."""
    from agentrun._client import AsyncClient

    if args.emulator:
        from agentrun.emulator import Emulator

        async with Emulator(emulator_settings) as emu:
            if announce is not None:
                announce(f"using the embedded emulator at {emu.endpoint}")
            async with AsyncClient(
                emu.endpoint,
                api_key=emu.api_key,
                pool_limit=pool_limit,
                mode=mode,  # type: ignore[arg-type]
                timeout=timeout,
            ) as client:
                yield client
        return
    async with AsyncClient(
        settings=connection_settings(args, pool_limit=pool_limit),
        mode=mode,  # type: ignore[arg-type]
        timeout=timeout,
    ) as client:
        yield client


def connection_settings(args: argparse.Namespace, *, pool_limit: int = 100) -> Any:
    """The `ConnectionSettings` the connection flags (and the environment) describe. Raises
    `ConfigurationError` for a bad --api-base or missing credentials."""
    from agentrun._settings import ConnectionSettings

    return ConnectionSettings(
        api_base=args.api_base,
        allow_insecure_http=getattr(args, "allow_insecure_http", False) or None,
        api_key=args.api_key,
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        pool_limit=pool_limit,
    )


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message saying what to do) for an error that ended a command."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    from agentrun._auth import is_certificate_failure

    if isinstance(exc, APIConnectionError) and is_certificate_failure(exc):
        where = "the token endpoint" if exc.token_endpoint else "the service"
        return EXIT_AUTH_CONFIG, (
            f"TLS certificate verification failed for {where}: {text}; trust its CA "
            "(SSL_CERT_FILE=/path/ca.pem) or check --api-base / AZURE_AUTHORITY_HOST"
        )
    if isinstance(exc, APIConnectionError) and exc.token_endpoint:
        return EXIT_RUN_FAILED, (
            f"cannot reach the token endpoint: {text}; check the network and "
            "AZURE_AUTHORITY_HOST, then try again"
        )
    if isinstance(exc, ConfigurationError):
        hint = " (on the command line: --api-base URL)" if "api_base" in text else ""
        return EXIT_AUTH_CONFIG, f"configuration error: {text}{hint}"
    if isinstance(exc, AuthenticationError):
        return EXIT_AUTH_CONFIG, (
            f"authentication failed: {text}; check --api-key / AZURE_AD_TOKEN or the "
            "AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET service principal"
        )
    if isinstance(exc, PermissionDeniedError):
        return EXIT_AUTH_CONFIG, (
            f"permission denied: {text}; give the identity the Azure AI User or Azure AI "
            "Developer role on the project"
        )
    if isinstance(exc, NotFoundError):
        return EXIT_AUTH_CONFIG, f"not found: {text}; check the agent id, --thread and --api-base"
    if isinstance(exc, RunError):
        hint = f"; continue the thread with --thread {exc.thread_id}" if exc.thread_id else ""
        return EXIT_RUN_FAILED, f"the run did not complete: {text}{hint}"
    if isinstance(exc, APITimeoutError):
        return EXIT_RUN_FAILED, f"timed out: {text}; raise --timeout or try again"
    if isinstance(exc, APIConnectionError):
        return EXIT_RUN_FAILED, (
            f"cannot reach the service: {text}; check --api-base and the network, then try again"
        )
    if isinstance(exc, BadRequestError):
        return EXIT_RUN_FAILED, f"the service rejected the request: {text}"
    if isinstance(exc, APIStatusError):
        return EXIT_RUN_FAILED, f"the service answered {exc.status_code}: {text}; try again later"
    if isinstance(exc, AgentRunError):
        return EXIT_RUN_FAILED, f"error: {text}"
    if isinstance(exc, OSError):
        return EXIT_RUN_FAILED, f"{text}"
    return EXIT_RUN_FAILED, f"unexpected error ({type(exc).__name__}): {text}; please report it"


# -- agentrun run -----------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run an agent once and stream its reply to stdout. Thread id, run id and token usage "
        "go to stderr. Exit codes: 0 ok, 1 the run failed, 2 usage error, 3 authentication or "
        "configuration error, 130 interrupted."
    )
    parser.add_argument(
        "agent",
        metavar="AGENT",
        help="agent id (asst_...), v2 agent name[:version], or azure_ai/agents/ID",
    )
    parser.add_argument("prompt", metavar="PROMPT", help="the user message ('-' reads stdin)")
    parser.add_argument("--thread", metavar="ID", help="continue this thread")
    parser.add_argument("--instructions", metavar="TEXT", help="override the agent's instructions")
    parser.add_argument(
        "--no-stream", action="store_true", help="wait for the whole reply, then print it"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the whole chat completion as JSON"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="give up (and cancel the run) after S seconds"
    )
    parser.add_argument("--mode", choices=MODES, help="how to follow the run: stream, poll or auto")
    add_connection_arguments(parser)


def main(args: argparse.Namespace) -> int:
    prog = "agentrun run"
    from agentrun._batch import to_model

    try:
        model = to_model(args.agent)
    except ConfigurationError as exc:
        return fail(prog, EXIT_USAGE, f"{exc}")
    problem = check_connection_arguments(args)
    if problem:
        return fail(prog, EXIT_USAGE, problem)
    if args.timeout is not None and not args.timeout > 0:
        return fail(prog, EXIT_USAGE, "--timeout must be a positive number of seconds")
    if args.emulator and args.thread:
        return fail(prog, EXIT_USAGE, EMULATOR_THREAD_NOTE.format(thread=args.thread))
    prompt: str = args.prompt
    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        return fail(prog, EXIT_USAGE, "the prompt is empty: give the user message to send")
    try:
        code: int = anyio.run(_run, args, model, prompt, backend="asyncio")
    except KeyboardInterrupt:
        return fail(prog, EXIT_INTERRUPTED, "interrupted")
    return code


EMULATOR_THREAD_NOTE = (
    "--emulator starts a fresh emulator for each command, so thread {thread} cannot exist in "
    "it. To continue threads locally, keep one emulator running (`agentrun emulator` in "
    "another terminal) and point at it with --api-base and --api-key as it prints"
)


class WaitingNote:
    """ "waiting for the reply (N s)" on stderr until the first token, only when stderr is a
    terminal (never in a pipe or a file, never on stdout). `clear()` erases it."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._shown = False
        self._done = False
        try:
            self.enabled = bool(self._stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False

    async def run(self) -> None:
        """Update the note every second until cleared (run it in a task)."""
        if not self.enabled:
            return
        start = anyio.current_time()
        while not self._done:
            elapsed = anyio.current_time() - start
            self._write(f"\r\x1b[Kwaiting for the reply ({elapsed:.0f} s)... ")
            self._shown = True
            await anyio.sleep(1.0)

    def clear(self) -> None:
        self._done = True
        if self._shown:
            self._shown = False
            self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(text)
            self._stream.flush()


async def _run(args: argparse.Namespace, model: str, prompt: str) -> int:
    note = WaitingNote()
    code = EXIT_RUN_FAILED
    async with anyio.create_task_group() as tg:
        tg.start_soon(note.run)
        try:
            code = await _run_inner(args, model, prompt, note)
        finally:
            note.clear()
            tg.cancel_scope.cancel()
    return code


async def _run_inner(args: argparse.Namespace, model: str, prompt: str, note: WaitingNote) -> int:
    from agentrun._openai import ChatCompletion, CompletionStream, chat

    prog = "agentrun run"
    stream = not (args.no_stream or args.json)
    info: dict[str, Any] = {}
    wrote = False
    code = EXIT_OK
    with anyio.CancelScope() as scope, sigint_cancels(scope) as intr:
        try:
            async with open_client(
                args, announce=lambda m: print(f"{prog}: {m}", file=sys.stderr)
            ) as client:
                resp = await chat(
                    client,
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    thread_id=args.thread,
                    instructions=args.instructions,
                    stream=stream,
                    timeout=args.timeout,
                    mode=args.mode,
                )
                if isinstance(resp, CompletionStream):
                    async with resp:
                        async for chunk in resp:
                            info["thread_id"] = chunk.get("thread_id") or info.get("thread_id")
                            info["run_id"] = chunk.get("run_id") or info.get("run_id")
                            for choice in chunk.to_dict()["choices"]:
                                text = (choice.get("delta") or {}).get("content")
                                if text:
                                    note.clear()
                                    sys.stdout.write(text)
                                    sys.stdout.flush()
                                    wrote = True
                                if choice.get("finish_reason"):
                                    info["finish_reason"] = choice["finish_reason"]
                    result = resp.result
                    if result is not None:
                        info["thread_id"], info["run_id"] = result.thread_id, result.run_id
                        u = result.usage
                        if u is not None:
                            info["usage"] = (u.prompt_tokens, u.completion_tokens, u.total_tokens)
                    if wrote:
                        sys.stdout.write("\n")
                        sys.stdout.flush()
                else:
                    assert isinstance(resp, ChatCompletion)
                    note.clear()
                    data = resp.to_dict()
                    if args.json:
                        print(json.dumps(data, indent=2, ensure_ascii=False), flush=True)
                    else:
                        content = data["choices"][0]["message"].get("content") or ""
                        print(content, flush=True)
                    info["thread_id"], info["run_id"] = data.get("thread_id"), data.get("run_id")
                    info["finish_reason"] = data["choices"][0].get("finish_reason")
                    usage = data.get("usage")
                    if usage:
                        info["usage"] = (
                            usage["prompt_tokens"],
                            usage["completion_tokens"],
                            usage["total_tokens"],
                        )
        except BrokenPipeError:
            # `agentrun run ... | head`: the reader is gone. Leaving the stream above has
            # cancelled the run; exit quietly, as `yes | head` does.
            from agentrun.cli import silence_stdout

            silence_stdout()
            return EXIT_BROKEN_PIPE
        except Exception as exc:
            note.clear()
            with contextlib.suppress(BrokenPipeError):
                if wrote:
                    sys.stdout.write("\n")
                    sys.stdout.flush()
            code, message = describe_error(exc)
            return fail(prog, code, message)
    if intr.interrupted or scope.cancelled_caught:
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()
        run = info.get("run_id")
        what = f"; run {run} was cancelled on the service" if run else ""
        return fail(prog, EXIT_INTERRUPTED, f"interrupted{what}")
    err = sys.stderr
    if info.get("thread_id"):
        print(f"thread: {info['thread_id']}", file=err)
    if info.get("run_id"):
        print(f"run: {info['run_id']}", file=err)
    if "usage" in info:
        p, c, t = info["usage"]
        print(f"usage: {p} prompt + {c} completion = {t} tokens", file=err)
    reason = info.get("finish_reason")
    if reason in ("length", "content_filter"):
        print(f"note: the reply was cut short ({reason})", file=err)
    if info.get("thread_id") and args.emulator:
        print(
            "note: this embedded emulator (and its thread) is gone now; to continue threads "
            "locally, run `agentrun emulator` and use --api-base",
            file=err,
        )
    elif info.get("thread_id"):
        print(
            f"continue with: agentrun run {args.agent} PROMPT --thread {info['thread_id']}",
            file=err,
        )
    err.flush()
    return code
