"""Every example in docs/v2.md runs as written: Python programs are executed (under -W error)
and print what their comments say; YAML blocks load as emulator settings."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from agentrun.emulator import EmulatorSettings

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "v2.md"
TEXT = DOC.read_text(encoding="utf-8")
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
YAML = re.findall(r"```yaml\n(.*?)```", TEXT, re.S)
EXPECTED = re.compile(r"print\((?:.*)\)\s+# (.+)$", re.M)


def test_the_page_keeps_its_examples() -> None:
    """The page has its three runnable programs (agentrun with v2 agents, the openai client,
    function tools) and one settings block."""
    assert len(PYTHON) == 3 and len(YAML) == 1


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_example_runs(index: int, tmp_path: pathlib.Path) -> None:
    """The program exits 0, writes nothing to stderr and prints the output its comments
    promise (each `print(...)  # text` comment's text, before any "(", appears in stdout)."""
    code = PYTHON[index]
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for comment in EXPECTED.findall(code):
        promised = comment.split(" (")[0]  # "(...)" in a comment explains, it is not output
        assert promised.strip() in proc.stdout, (promised, proc.stdout)


def test_yaml_example_loads(tmp_path: pathlib.Path) -> None:
    """The v2_agents block is valid settings: the agent, its version and its tool."""
    path = tmp_path / "settings.yaml"
    path.write_text(YAML[0])
    settings = EmulatorSettings.from_yaml(path)
    [agent] = settings.v2_agents
    assert (agent.name, agent.version) == ("support-bot", "2")
    assert agent.tools[0]["name"] == "lookup_order"
    names = {(a.name, a.version) for a in settings.all_v2_agents()}
    assert {("support-bot", "2"), ("general-assistant", "1")} <= names
