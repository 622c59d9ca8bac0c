"""Every example in docs/emulator.md runs as written.

Python blocks run in a fresh interpreter with ``-W error``; a block after
``<!-- docs-test: pytest -->`` is run as a pytest file with the plugin; YAML blocks load as
settings; the JSON block parses; ``$ agentrun emulator ...`` lines start the CLI (with
``--port 0`` appended so they never collide with a real port 8080) and the ``$ curl`` lines
run against it with the port substituted.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentrun.emulator import EmulatorSettings

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "emulator.md"
FENCE = re.compile(
    r"(?:<!-- docs-test: (?P<mark>[\w-]+) -->\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)```",
    re.DOTALL,
)
AGENTRUN = pathlib.Path(sys.executable).parent / "agentrun"


def _blocks(lang: str, mark: str | None = None) -> list[str]:
    return [
        m["body"]
        for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))
        if m["lang"] == lang and m["mark"] == mark
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    return env


PYTHON_BLOCKS = _blocks("python")


def test_doc_has_the_examples() -> None:
    """The doc keeps its runnable examples (so the tests below cannot pass vacuously)."""
    assert len(PYTHON_BLOCKS) >= 4
    assert len(_blocks("python", "pytest")) == 1
    assert len(_blocks("yaml")) == 1
    assert len(_blocks("console")) >= 3


@pytest.mark.parametrize(
    "code", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))]
)
def test_python_block_runs(code: str, tmp_path: pathlib.Path) -> None:
    """Each Python block runs to completion with warnings as errors."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pytest_block_passes(tmp_path: pathlib.Path) -> None:
    """The pytest example passes as a user's test file, with the plugin loaded as installed."""
    [code] = _blocks("python", "pytest")
    (tmp_path / "test_my_agent.py").write_text(code)
    args = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"]
    if not any(ep.name == "agentrun" for ep in importlib.metadata.entry_points(group="pytest11")):
        args += ["-p", "agentrun.emulator.pytest_plugin"]
    result = subprocess.run(
        [*args, str(tmp_path)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_yaml_block_loads(tmp_path: pathlib.Path) -> None:
    """The YAML example is a valid settings file with the values the text describes."""
    [text] = _blocks("yaml")
    path = tmp_path / "emulator.yaml"
    path.write_text(text)
    settings = EmulatorSettings.from_yaml(path)
    assert settings.seed == 42
    assert [a.id for a in settings.all_agents()] == [
        "asst_abc123",
        "asst_def456",
        "asst_websearch01",
        "asst_coder01",
        "asst_connected01",
        "asst_filesearch01",
        "asst_weather",
    ]
    weather = settings.all_agents()[-1]
    assert weather.timing is not None
    assert weather.timing.run_duration == 1.0
    assert weather.tools[0]["function"]["name"] == "get_weather"
    assert settings.fault_rules[0].status == 503


def test_json_block_matches_stats_keys() -> None:
    """The stats example parses and has exactly the keys the emulator reports."""
    [text] = _blocks("json")
    example = json.loads(text)
    from agentrun.emulator import Emulator

    with Emulator().in_thread() as emu:
        assert set(example) == set(emu.stats())


class _Cli:
    """One `agentrun emulator ...` process from the doc, on a free port."""

    def __init__(self, command: str, cwd: pathlib.Path) -> None:
        argv = shlex.split(command)
        assert argv[:2] == ["agentrun", "emulator"], command
        self.proc = subprocess.Popen(
            [str(AGENTRUN), *argv[1:], "--port", "0"],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready: "):
                break
        else:
            raise AssertionError(f"no ready line: {self.lines} {self.proc.stderr}")
        match = re.search(r":(\d+)/api/projects/", self.lines[-1])
        assert match is not None
        self.port = int(match.group(1))

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out + err


def _console_commands() -> Iterator[tuple[str, list[str]]]:
    """(command, expected output lines) for every `$ ` line of the console blocks."""
    for block in _blocks("console"):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ "):
                output = []
                for follow in lines[i + 1 :]:
                    if follow.startswith("$ "):
                        break
                    output.append(follow)
                yield line[2:], output


def test_cli_examples_start_and_print_what_the_doc_shows(tmp_path: pathlib.Path) -> None:
    """Each `$ agentrun emulator ...` line starts a server that prints a ready line and
    stops cleanly on SIGINT; the first one prints exactly the output shown (port aside)."""
    commands = [(c, out) for c, out in _console_commands() if c.startswith("agentrun ")]
    assert len(commands) >= 4
    for command, expected in commands:
        cli = _Cli(command, tmp_path)
        try:
            if expected:
                shown = [line.replace(":8080", f":{cli.port}") for line in expected]
                assert cli.lines == shown
            if "--ca-out" in command:
                ca = shlex.split(command)[shlex.split(command).index("--ca-out") + 1]
                assert (tmp_path / ca).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        finally:
            code, rest = cli.stop()
        assert code == 0, rest
        assert "stopped" in rest


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_examples(tmp_path: pathlib.Path) -> None:
    """Each `$ curl` line succeeds against `agentrun emulator` and returns JSON."""
    cli = _Cli("agentrun emulator", tmp_path)
    outputs: dict[str, Any] = {}
    try:
        curls = [c for c, _ in _console_commands() if c.startswith("curl ")]
        assert len(curls) >= 5
        for command in curls:
            argv = shlex.split(command.replace(":8080", f":{cli.port}"))
            result = subprocess.run(
                [*argv, "--fail-with-body", "--noproxy", "*"],
                capture_output=True,
                text=True,
                timeout=30,
                env=_env(),
                check=False,
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            outputs[command] = json.loads(result.stdout)
    finally:
        code, rest = cli.stop()
    assert code == 0, rest
    bodies = list(outputs.values())
    assert "requests_total" in bodies[0]
    assert any("access_token" in body for body in bodies)
    assert any(body.get("data") and body["data"][0]["object"] == "assistant" for body in bodies)


@pytest.fixture(autouse=True)
def _reap_threads() -> Iterator[None]:
    """Guard: the CLI tests leave no reader threads behind."""
    before = threading.active_count()
    yield
    assert threading.active_count() <= before
