"""The complete scripts in the async API docs run as written (against the bundled emulator)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _scripts(name: str) -> list[str]:
    """The python blocks of a doc page that are whole programs (they call anyio.run)."""
    return [b for b in BLOCK.findall((DOCS / name).read_text()) if "anyio.run(main)" in b]


SCRIPTS = [
    (name, i, code)
    for name in ("async.md", "observability.md")
    for i, code in enumerate(_scripts(name))
]


def test_async_doc_has_runnable_examples() -> None:
    """The async page keeps its runnable examples (a rename of the marker would skip them)."""
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize(
    ("name", "index", "code"), SCRIPTS, ids=[f"{n}#{i}" for n, i, _ in SCRIPTS]
)
def test_doc_script_runs(name: str, index: int, code: str, tmp_path: Path) -> None:
    """Each complete example exits 0 with no warnings (run under -W error)."""
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"{name} block {index} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), "the example printed nothing"
    assert proc.stderr == ""
