"""The `agentrun` command: one entry point, one subcommand per application.

Each subcommand lives in its own module, which exposes `configure(parser)` to declare its
arguments and `main(args) -> int` to run. Modules are imported only when their command runs,
so `agentrun --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# The exit codes live with the other shared CLI pieces; re-exported here for callers of old.
from agentrun._cli_common import (
    EXIT_AUTH_CONFIG as EXIT_AUTH_CONFIG,
)
from agentrun._cli_common import (
    EXIT_BROKEN_PIPE as EXIT_BROKEN_PIPE,
)
from agentrun._cli_common import (
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
)
from agentrun._cli_common import (
    EXIT_OK as EXIT_OK,
)
from agentrun._cli_common import (
    EXIT_RUN_FAILED as EXIT_RUN_FAILED,
)
from agentrun._cli_common import (
    EXIT_USAGE as EXIT_USAGE,
)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("agentrun.emulator._cli", "run the local Agent Service emulator"),
    "run": ("agentrun._cli_run", "run an agent once, streaming its reply"),
    "batch": ("agentrun._cli_batch", "run many invocations from a JSONL file, resumably"),
    "demo": ("agentrun._demo", "a tour on the embedded emulator: the examples, then a batch"),
    "serve": ("agentrun._cli_serve", "serve agents to OpenAI clients (LiteLLM's config.yaml)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Call Azure AI Foundry Agents in the OpenAI chat-completions format.",
    )
    parser.add_argument("--version", action="version", version=f"agentrun {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if command is None or command == name:
            importlib.import_module(module_name).configure(p)
    return parser


def _version() -> str:
    from agentrun import __version__

    return __version__


def _command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(args_list) or "")
    args = parser.parse_args(args_list)
    module = importlib.import_module(args._module)
    try:
        code: int = module.main(args)
    except KeyboardInterrupt:
        print("agentrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `agentrun ... | head`: the reader closed the pipe. Exit quietly, as `yes | head` does.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush after a broken pipe does
    not print a traceback (the recipe of Python's signal module docs)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
