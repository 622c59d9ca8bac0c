"""`agentrun demo` in an 80-column terminal: its code examples are shown whole, never cut."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from agentrun import _demo

BLOCKS = re.findall(r'_code\(\s*out,\s*"""\n(.*?)"""', Path(_demo.__file__).read_text(), re.S)


def _render(source: str, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    _demo._code(console, source)
    return console.export_text()


def test_examples_fit_80_columns() -> None:
    """Every code line of the demo fits the documented width, so an 80-column terminal shows
    each line unchanged."""
    assert len(BLOCKS) >= 4
    for block in BLOCKS:
        for line in block.splitlines():
            assert len(line) <= _demo.CODE_WIDTH, line
        rendered = [ln.rstrip() for ln in _render(block, 80).splitlines()]
        assert rendered == [ln.rstrip() for ln in block.strip("\n").splitlines()]


def test_examples_wrap_in_narrow_terminals() -> None:
    """In a 40-column terminal the lines wrap: no character of the code is lost."""
    for block in BLOCKS:
        rendered = _render(block, 40)
        assert max(len(ln) for ln in rendered.splitlines()) <= 40
        assert "".join(rendered.split()) == "".join(block.split())


def test_demo_at_80_columns_shows_every_code_line() -> None:
    """The real demo, with COLUMNS=80: each example line appears whole in its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONWARNINGS="error", COLUMNS="80")
    proc = subprocess.run(
        [sys.executable, "-m", "agentrun.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    shown = {ln.rstrip() for ln in proc.stdout.splitlines()}
    for block in BLOCKS:
        for line in block.strip("\n").splitlines():
            assert line.rstrip() in shown, line
