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

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "emulator": ("agentrun.emulator._cli", "run the local Agent Service emulator"),
    "serve": ("agentrun._cli_serve", "serve agents to OpenAI clients (LiteLLM's config.yaml)"),
}

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH_CONFIG = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrun",
        description="Call Azure AI Foundry Agents in the OpenAI chat-completions format.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        code: int = module.main(args)
    except KeyboardInterrupt:
        print("agentrun: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
