"""`agentrun demo`: a tour on the embedded emulator.

Starts the Agent Service emulator in process, runs the examples of the LiteLLM page that
started the project (a basic call, streaming, thread continuation, instructions) with
agentrun, then a batch of 2,000 invocations at concurrency 500 with the live view and the
summary. Needs no Azure account and no network.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import anyio
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from agentrun._cli_common import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE

__all__ = ["configure", "main"]

PROG = "agentrun demo"
AGENT = "azure_ai/agents/asst_abc123"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "A tour of agentrun on the embedded emulator (no Azure account needed): the basic "
        "call, streaming, a thread continued, instructions, then a batch with live progress."
    )
    parser.add_argument(
        "--batch-size", type=int, default=2000, metavar="N", help="items in the batch (2000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=500, metavar="N", help="batch concurrency (500)"
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live view on a terminal, plain lines otherwise (auto)",
    )


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 0 or args.concurrency < 1:
        print(f"{PROG}: --batch-size must be >= 0 and --concurrency >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = anyio.run(_demo, args, backend="asyncio")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _settings() -> Any:
    from agentrun.emulator import EmulatorSettings, Timing

    # Small but realistic: queued a moment, "thinking", then the reply streams word by word.
    return EmulatorSettings(timing=Timing(queue_delay=0.05, run_duration=0.25, delta_interval=0.02))


#: The examples are written to fit this many columns, so an 80-column terminal shows them
#: whole; a narrower one wraps them (`word_wrap=True`) instead of cutting them off.
CODE_WIDTH = 78


def _code(console: Console, source: str) -> None:
    console.print(
        Syntax(
            source.strip("\n"),
            "python",
            theme="ansi_dark",
            background_color="default",
            word_wrap=True,
        )
    )


def _batch_lines(n: int) -> Any:
    topics = (
        "the key principles of software architecture",
        "the main benefits of cloud computing",
        "machine learning in simple terms",
        "how threads keep a conversation",
    )
    names = ("Alice", "Bob", "Carol", "Dave", "Erin")
    for i in range(n):
        kind = i % 4
        cid = f"item-{i:05d}"
        if kind == 0:
            line: dict[str, Any] = {"custom_id": cid, "prompt": f"What is {i} * 4?"}
        elif kind == 1:
            line = {"custom_id": cid, "prompt": f"Explain {topics[i % len(topics)]}"}
        elif kind == 2:
            line = {
                "custom_id": cid,
                "messages": [{"role": "user", "content": f"My name is {names[i % len(names)]}"}],
            }
        else:  # an OpenAI Batch API line, as-is
            line = {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "azure_ai/agents/asst_def456",
                    "messages": [{"role": "user", "content": f"What is {i} + 25?"}],
                },
            }
        yield json.dumps(line) + "\n"


def _write_lines(path: pathlib.Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(_batch_lines(n))


def _first_line(path: pathlib.Path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.readline().strip()


async def _demo(args: argparse.Namespace) -> int:
    from agentrun._openai import aclose_clients, acompletion
    from agentrun.emulator import Emulator

    out = Console(highlight=False)
    started = time.monotonic()
    async with Emulator(_settings()) as emu:
        out.print(
            Panel.fit(
                "[bold]agentrun demo[/]: Azure AI Foundry Agents in the OpenAI chat-completions "
                "format\n"
                f"The Agent Service emulator runs in this process at [cyan]{emu.endpoint}[/]\n"
                "(agents asst_abc123 and asst_def456; static token "
                f"[cyan]{emu.api_key}[/]). Against Azure, set AZURE_AI_API_BASE and "
                "AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET instead.",
            )
        )
        common: dict[str, Any] = {"api_base": emu.endpoint, "api_key": emu.api_key}
        try:
            # 1. Basic agent completion
            out.rule("1. Basic agent completion")
            _code(
                out,
                """
# agentrun.completion(...) in sync code
response = await agentrun.acompletion(
    model="azure_ai/agents/asst_abc123", api_base=API_BASE,
    messages=[{"role": "user",
               "content": "Explain machine learning in simple terms"}])
print(response.choices[0].message.content)
print(f"Usage: {response.usage}")
""",
            )
            resp = await acompletion(
                AGENT,
                [{"role": "user", "content": "Explain machine learning in simple terms"}],
                **common,
            )
            out.print(f"[green]>[/] {resp.choices[0].message.content}")
            out.print(f"[green]>[/] Usage: {resp.usage}")

            # 2. Streaming
            out.rule("2. Streaming agent responses")
            _code(
                out,
                """
response = await agentrun.acompletion(
    model="azure_ai/agents/asst_abc123",
    messages=[{
        "role": "user",
        "content": "What are the key principles of software architecture?",
    }],
    api_base=API_BASE, stream=True)
async for chunk in response:
    if chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="")
""",
            )
            stream = await acompletion(
                AGENT,
                [
                    {
                        "role": "user",
                        "content": "What are the key principles of software architecture?",
                    }
                ],
                stream=True,
                **common,
            )
            out.print("[green]>[/] ", end="")
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        out.print(chunk.choices[0].delta.content, end="")
                        out.file.flush()
            out.print()

            # 3. Conversation continuity
            out.rule("3. Conversation continuity (thread_id)")
            _code(
                out,
                """
response1 = await agentrun.acompletion(
    model="azure_ai/agents/asst_abc123", api_base=API_BASE,
    messages=[{"role": "user", "content": "My name is Alice"}])
thread_id = response1._hidden_params.get("thread_id")  # or .thread_id
response2 = await agentrun.acompletion(
    model="azure_ai/agents/asst_abc123", api_base=API_BASE,
    messages=[{"role": "user", "content": "What's my name?"}],
    thread_id=thread_id)
print(response2.choices[0].message.content)
""",
            )
            r1 = await acompletion(
                AGENT, [{"role": "user", "content": "My name is Alice"}], **common
            )
            thread_id = r1._hidden_params.get("thread_id")
            out.print(f"[green]>[/] {r1.choices[0].message.content}   [dim](thread {thread_id})[/]")
            r2 = await acompletion(
                AGENT,
                [{"role": "user", "content": "What's my name?"}],
                thread_id=thread_id,
                **common,
            )
            answer = r2.choices[0].message.content or ""
            out.print(f"[green]>[/] {answer}")
            if "Alice" not in answer:
                out.print("[red]the thread did not remember the name[/]")
                return EXIT_RUN_FAILED

            # 4. Instructions
            out.rule("4. Agent-specific parameters: instructions")
            _code(
                out,
                """
response = await agentrun.acompletion(
    model="azure_ai/agents/asst_abc123", api_base=API_BASE,
    messages=[{"role": "user",
               "content": "Analyze this data and provide insights"}],
    # instructions override the agent's own
    instructions="Be concise and focus on key insights")
""",
            )
            r3 = await acompletion(
                AGENT,
                [{"role": "user", "content": "Analyze this data and provide insights"}],
                instructions="Be concise and focus on key insights",
                **common,
            )
            out.print(f"[green]>[/] {r3.choices[0].message.content}")
        finally:
            await aclose_clients()

        # 5. A batch
        code = await _batch(args, emu, out)
    out.print(f"[dim]demo finished in {time.monotonic() - started:.1f}s[/]")
    return code


async def _batch(args: argparse.Namespace, emu: Any, out: Console) -> int:
    from agentrun._batch import BatchConfig, BatchRunner
    from agentrun._cli_batch import run_with_view, summary_lines
    from agentrun._client import AsyncClient

    n, conc = args.batch_size, args.concurrency
    out.rule(f"5. A batch: {n:,} invocations, {conc} at a time")
    out.print(
        f"agentrun batch prompts.jsonl -o results.jsonl --agent asst_abc123 --concurrency {conc}",
        style="bold",
    )
    out.print(
        "[dim]Each line is a chat request or an OpenAI Batch API line; each result is appended "
        "as one line (resumable: rerun the same command after a crash or Ctrl-C).[/]"
    )
    view = args.progress
    if view == "auto":
        view = "live" if sys.stderr.isatty() else "plain"
    with tempfile.TemporaryDirectory(prefix="agentrun-demo-") as tmp:
        src = pathlib.Path(tmp) / "prompts.jsonl"
        dst = pathlib.Path(tmp) / "results.jsonl"
        _write_lines(src, n)
        runner = BatchRunner(
            BatchConfig(
                input_path=src,
                output_path=dst,
                default_model=AGENT,
                concurrency=conc,
                timeout=120.0,
            )
        )
        runner.prepare()
        async with AsyncClient(emu.endpoint, api_key=emu.api_key) as client:
            summary = await run_with_view(runner, client, view=view, interval=2.0)
        out.print()
        out.print(Panel("\n".join(summary_lines(summary)), title="summary", expand=False))
        first = _first_line(dst)
        if first:
            sample = json.loads(first)
            body = sample.get("response", {}) or {}
            content = (body.get("body") or {}).get("choices", [{}])[0].get("message", {})
            short = {
                "custom_id": sample.get("custom_id"),
                "response": {"status_code": body.get("status_code"), "body": {"...": "..."}},
                "error": sample.get("error"),
                "thread_id": sample.get("thread_id"),
                "run_id": sample.get("run_id"),
                "timings": sample.get("timings"),
            }
            out.print("one line of results.jsonl (shortened):", style="dim")
            out.print(json.dumps(short), soft_wrap=True)
            out.print(f"[dim]  reply: {content.get('content')!r}[/]")
        stats = emu.stats()
        out.print(
            f"[dim]the emulator saw {stats['requests_total']} requests, "
            f"{stats['runs_created']} runs, peak {stats['peak_active_runs']} runs at once[/]"
        )
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_RUN_FAILED
