"""v2 agents in the emulator's settings: V2AgentSpec validation and the YAML reader."""

from __future__ import annotations

import pathlib

import pytest

from agentrun.emulator import EmulatorSettings, SettingsError, V2AgentSpec


def test_spec_validates_the_name() -> None:
    """A V2AgentSpec takes only names the service allows (≤ 63, alphanumeric ends, hyphens)."""
    assert V2AgentSpec(name="ok-name-1").version == "1"
    for bad in ("-x", "x-", "a" * 64, "a_b", ""):
        with pytest.raises(SettingsError):
            V2AgentSpec(name=bad)


def test_configured_agents_follow_the_preloaded_ones() -> None:
    """all_v2_agents lists the three preloaded agents then the configured ones; a configured
    agent with a preloaded name and version replaces it."""
    mine = V2AgentSpec(name="general-assistant", instructions="Be concise.")
    extra = V2AgentSpec(name="general-assistant", version="2")
    agents = EmulatorSettings(v2_agents=(mine, extra)).all_v2_agents()
    assert [(a.name, a.version) for a in agents] == [
        ("math-tutor", "1"),
        ("weather-assistant", "1"),
        ("general-assistant", "1"),
        ("general-assistant", "2"),
    ]
    assert agents[2].instructions == "Be concise."


def test_yaml_reader(tmp_path: pathlib.Path) -> None:
    """v2_agents in YAML: an integer version is read as its string; errors name the key and
    the line."""
    good = tmp_path / "good.yaml"
    good.write_text("v2_agents:\n  - name: bot\n    version: 3\n    model: gpt-4.1\n")
    [agent] = EmulatorSettings.from_yaml(good).v2_agents
    assert (agent.name, agent.version, agent.model) == ("bot", "3", "gpt-4.1")
    cases = {
        "v2_agents: 5\n": "v2_agents: must be a list",
        "v2_agents:\n  - version: '1'\n": "v2_agents.0.name: required string",
        "v2_agents:\n  - name: bot\n    colour: red\n": "v2_agents.0.colour: unknown key",
        "v2_agents:\n  - name: bot\n    tools: [3]\n": "v2_agents.0.tools",
        "v2_agents:\n  - name: bad_name\n": "v2_agents.0",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(text)
        with pytest.raises(SettingsError, match=message) as err:
            EmulatorSettings.from_yaml(path)
        assert f"{path}:" in str(err.value)
