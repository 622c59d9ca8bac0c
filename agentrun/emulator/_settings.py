"""Emulator settings: timing, fault rates, one-shot fault rules, agents, credentials.

All settings are frozen attrs values. `EmulatorSettings.from_yaml` reads the same shape from a
YAML file and names the offending key and line when something is wrong.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import yaml

__all__ = [
    "AgentSpec",
    "EmulatorSettings",
    "FaultRule",
    "Faults",
    "SettingsError",
    "Timing",
    "V2AgentSpec",
]

FAULT_KINDS = (
    "status",
    "drop",
    "stream_cut",
    "run_failed",
    "run_expired",
    "stall",
    "html",
    "stream_error",
    "fail_after_text",
    "permission_denied",
)

#: The scripted behaviours an agent (or a `[emulator:script=NAME]` directive) can select.
SCRIPTS = (
    "web_search",
    "code_then_text",
    "connected_agent",
    "file_search",
    "two_messages",
    "text_then_function",
    "fail_midway",
)


class SettingsError(ValueError):
    """An invalid emulator setting (from Python or from a YAML file)."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise SettingsError(f"{attribute.name} must be >= 0, got {value!r}")


def _rate(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{attribute.name} must be between 0 and 1, got {value!r}")


@attrs.frozen
class Timing:
    """How long a run spends in each phase (seconds).

    A run is `queued` for `queue_delay`, `in_progress` for `run_duration`, then its reply is
    streamed one delta per word every `delta_interval`, then it completes. `cancel_delay` is how
    long a run stays `cancelling`.
    """

    queue_delay: float = attrs.field(default=0.05, converter=float, validator=_non_negative)
    run_duration: float = attrs.field(default=0.2, converter=float, validator=_non_negative)
    delta_interval: float = attrs.field(default=0.02, converter=float, validator=_non_negative)
    cancel_delay: float = attrs.field(default=0.05, converter=float, validator=_non_negative)


@attrs.frozen
class Faults:
    """Seeded fault rates (probability per request or per run, 0.0 to 1.0)."""

    rate_429: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_500: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_503: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_drop: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_stream_cut: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_run_failed: float = attrs.field(default=0.0, converter=float, validator=_rate)
    rate_run_expired: float = attrs.field(default=0.0, converter=float, validator=_rate)
    retry_after: float = attrs.field(default=1.0, converter=float, validator=_non_negative)


def _check_kind(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in FAULT_KINDS:
        raise SettingsError(f"kind must be one of {', '.join(FAULT_KINDS)}, got {value!r}")


def _check_route(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value != "*" and (len(value.split(" ", 1)) != 2 or not value.split(" ", 1)[1]):
        raise SettingsError(f"route must be '*' or 'METHOD /path/template', got {value!r}")


@attrs.frozen
class FaultRule:
    """A one-shot scripted fault, applied to the next `times` matching requests (or runs).

    `route` is "METHOD /path/template" relative to the project base (for example
    "POST /threads/{thread_id}/runs") or "*". Kinds:

    - "status": an HTTP error with a JSON body; `retry_after` goes into the
      `retry_after_header` header when set.
    - "permission_denied": HTTP 401 with code `PermissionDenied` and the service's message
      ("The principal ... lacks the required data action ...").
    - "html": a gateway error, HTTP `status` (for example 502 or 504) with a `text/html` body.
    - "drop": the connection is closed before any response byte.
    - "stall": no response at all: the request is read and nothing is sent (or, on a stream
      with `after_events` > 0, that many frames are sent and then nothing more), until the
      client goes away or `EmulatorSettings.stall_limit` seconds pass; then the connection is
      closed. The run (if one was created) goes on.
    - "stream_cut": a streaming response is closed after `after_events` frames; the run goes
      on.
    - "stream_error": after `after_events` frames a stream sends ``event: error`` with
      ``{"error": {"code", "message", "param", "type"}}`` (`code` default "server_error") and
      ends.
    - "run_failed": the run fails with `last_error.code` `code` (any code, default
      "server_error"; see `docs/emulator.md` for the messages).
    - "fail_after_text": the run streams part of a text reply, then fails with `code`.
    - "run_expired": the run expires.

    The run kinds apply to runs created by a matching request.
    """

    route: str = attrs.field(default="*", validator=_check_route)
    kind: str = attrs.field(default="status", validator=_check_kind)
    status: int = 500
    retry_after: float | None = None
    retry_after_header: str = "Retry-After"
    code: str | None = None
    times: int = 1
    after_events: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from JSON/YAML data, rejecting unknown keys."""
        names = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(f"unknown fault rule key(s): {', '.join(unknown)}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise SettingsError(str(exc)) from exc


def _tuple_of_str(value: Sequence[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _tools(value: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], ...]:
    return tuple(value)


def _agent_tuple(value: Iterable[AgentSpec]) -> tuple[AgentSpec, ...]:
    return tuple(value)


def _rule_tuple(value: Iterable[FaultRule]) -> tuple[FaultRule, ...]:
    return tuple(value)


@attrs.frozen
class AgentSpec:
    """A preloaded agent: the id a client names in `assistant_id`, its model and instructions."""

    id: str
    name: str | None = None
    instructions: str = ""
    model: str = "gpt-4o"
    description: str | None = None
    tools: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_tools)
    timing: Timing | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    #: A scripted behaviour for every run of this agent (one of `SCRIPTS`, see
    #: docs/emulator.md); None for the ordinary deterministic model.
    script: str | None = attrs.field(default=None)

    @script.validator
    def _check_script(self, _attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and value not in SCRIPTS:
            raise SettingsError(f"script must be one of {', '.join(SCRIPTS)}, got {value!r}")


DEFAULT_AGENTS = (
    AgentSpec(
        id="asst_abc123",
        name="General Assistant",
        instructions="You are a helpful assistant.",
        model="gpt-4o",
        description="A general assistant (emulated).",
    ),
    AgentSpec(
        id="asst_def456",
        name="Math Tutor",
        instructions="You are a personal math tutor. Answer math questions step by step.",
        model="gpt-4o",
        description="A math tutor (emulated).",
    ),
    AgentSpec(
        id="asst_websearch01",
        name="Web Researcher",
        instructions="Search the web and cite your sources.",
        description="Runs a bing_grounding step, then answers with url_citation annotations.",
        tools=({"type": "bing_grounding", "bing_grounding": {"search_configurations": []}},),
        script="web_search",
    ),
    AgentSpec(
        id="asst_coder01",
        name="Coder",
        instructions="Write and run code to answer.",
        description="Writes text, runs code_interpreter (logs and an image), writes more text.",
        tools=({"type": "code_interpreter"},),
        script="code_then_text",
    ),
    AgentSpec(
        id="asst_connected01",
        name="Orchestrator",
        instructions="Ask the helper agent, then answer.",
        description="Calls a connected agent, then answers.",
        tools=(
            {
                "type": "connected_agent",
                "connected_agent": {
                    "id": "asst_helper01",
                    "name": "helper_agent",
                    "description": "A helper agent.",
                },
            },
        ),
        script="connected_agent",
    ),
    AgentSpec(
        id="asst_filesearch01",
        name="Librarian",
        instructions="Answer from the uploaded files and cite them.",
        description="Runs a file_search step, then answers with file_citation annotations.",
        tools=({"type": "file_search"},),
        script="file_search",
    ),
)


def _check_v2_name(_inst: object, _attribute: attrs.Attribute[Any], value: str) -> None:
    if not V2_AGENT_NAME_RE.fullmatch(value):
        raise SettingsError(
            f"v2 agent name must be 1 to 63 characters, letters, digits and hyphens, "
            f"starting and ending with a letter or digit, got {value!r}"
        )


@attrs.frozen
class V2AgentSpec:
    """A preloaded Foundry Agents v2 (Responses API) prompt agent, addressed by name + version.

    `tools` are Responses-API tool definitions, e.g. ``{"type": "function", "name": ...,
    "description": ..., "parameters": {...}}``. See ``docs/v2.md``.
    """

    name: str = attrs.field(validator=_check_v2_name)
    version: str = "1"
    instructions: str = ""
    model: str = "gpt-4o"
    description: str = ""
    tools: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_tools)
    timing: Timing | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)


#: v2 agent names: 1-63 characters, alphanumeric first and last, hyphens inside (the service's
#: rule for ``POST /agents/{name}/versions``).
V2_AGENT_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

DEFAULT_V2_AGENTS = (
    V2AgentSpec(
        name="general-assistant",
        instructions="You are a helpful assistant.",
        description="A general assistant (emulated, v2).",
    ),
    V2AgentSpec(
        name="math-tutor",
        instructions="You are a personal math tutor. Answer math questions step by step.",
        description="A math tutor (emulated, v2).",
    ),
    V2AgentSpec(
        name="weather-assistant",
        instructions="Use the get_weather tool to answer weather questions.",
        description="An agent with one function tool (emulated, v2).",
        tools=(
            {
                "type": "function",
                "name": "get_weather",
                "description": "The current weather for a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
            },
        ),
    ),
)


def _v2_agent_tuple(value: Iterable[V2AgentSpec]) -> tuple[V2AgentSpec, ...]:
    return tuple(value)


@attrs.frozen
class EmulatorSettings:
    """Everything that configures one emulator instance."""

    timing: Timing = attrs.field(factory=Timing)
    faults: Faults = attrs.field(factory=Faults)
    seed: int = 0
    agents: tuple[AgentSpec, ...] = attrs.field(default=(), converter=_agent_tuple)
    api_keys: tuple[str, ...] = attrs.field(default=("emulator-key",), converter=_tuple_of_str)
    tenant_id: str = "emulator-tenant"
    client_id: str = "agentrun-emulator"
    client_secret: str = "emulator-secret"
    token_lifetime: float = 3600
    thread_ttl: float = 3600.0
    fault_rules: tuple[FaultRule, ...] = attrs.field(default=(), converter=_rule_tuple)
    #: Seconds from a run's creation to its `expires_at` (the service uses 600): a run still
    #: waiting for tool outputs then ends `expired`.
    run_lifetime: int = attrs.field(default=600, converter=int)
    #: Static bearer keys of a principal without the Azure AI User role: accepted as
    #: credentials, but every API call with one answers 401 `PermissionDenied`.
    keys_without_role: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: Longest time (seconds) a "stall" fault holds a connection before closing it.
    stall_limit: float = attrs.field(default=300.0, converter=float, validator=_non_negative)
    #: Foundry Agents v2 agents (name + version), after the preloaded ones (see `all_v2_agents`).
    v2_agents: tuple[V2AgentSpec, ...] = attrs.field(default=(), converter=_v2_agent_tuple)

    def all_agents(self) -> tuple[AgentSpec, ...]:
        """The preloaded agents followed by the configured ones (which may replace them)."""
        ids = {a.id for a in self.agents}
        return tuple(a for a in DEFAULT_AGENTS if a.id not in ids) + self.agents

    def all_v2_agents(self) -> tuple[V2AgentSpec, ...]:
        """The preloaded v2 agents followed by the configured ones; a configured agent with the
        name and version of a preloaded one replaces it."""
        keys = {(a.name, a.version) for a in self.v2_agents}
        kept = tuple(a for a in DEFAULT_V2_AGENTS if (a.name, a.version) not in keys)
        return kept + self.v2_agents

    @classmethod
    def from_yaml(cls, path: str | pathlib.Path) -> EmulatorSettings:
        """Read settings from a YAML file.

        Top-level keys: timing, faults, seed, agents (list of {id, name, instructions, model,
        description, tools, timing, metadata, script}), api_keys, keys_without_role,
        tenant_id, client_id, client_secret, token_lifetime, thread_ttl, run_lifetime,
        stall_limit, fault_rules, v2_agents (list of {name, version, instructions, model,
        description, tools, timing, metadata}). Errors name the key and its line.
        """
        path = pathlib.Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: invalid YAML: {exc}") from exc
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise SettingsError(f"{path}: the top level must be a mapping")
        return _Reader(path, node).settings(data)


class _Reader:
    """Turns parsed YAML into settings, with `file:line: key: problem` errors."""

    def __init__(self, path: pathlib.Path, node: yaml.Node | None) -> None:
        self.path = path
        self.node = node

    def _line(self, keys: Sequence[str | int]) -> int | None:
        node = self.node
        line = None
        for key in keys:
            found = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                        found, line = v, k.start_mark.line + 1
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(key, int)
                and 0 <= key < len(node.value)
            ):
                found = node.value[key]
                line = found.start_mark.line + 1
            if found is None:
                return line
            node = found
        return line

    def error(self, keys: Sequence[str | int], message: str) -> SettingsError:
        dotted = ".".join(str(k) for k in keys)
        line = self._line(keys)
        where = f"{self.path}:{line}" if line else str(self.path)
        return SettingsError(f"{where}: {dotted}: {message}")

    def _build(self, keys: Sequence[str | int], kind: type[Any], data: Any) -> Any:
        if not isinstance(data, dict):
            raise self.error(keys, "must be a mapping")
        names = {a.name for a in attrs.fields(kind)}
        for key in data:
            if key not in names:
                raise self.error([*keys, key], f"unknown key (expected one of {sorted(names)})")
        try:
            return kind(**data)
        except (TypeError, ValueError) as exc:
            bad = next((k for k in data if k in str(exc)), None)
            raise self.error([*keys, bad] if bad else keys, str(exc)) from exc

    def settings(self, data: dict[str, Any]) -> EmulatorSettings:
        names = {a.name for a in attrs.fields(EmulatorSettings)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise self.error([key], f"unknown key (expected one of {sorted(names)})")
            if key == "timing":
                kwargs[key] = self._build([key], Timing, value)
            elif key == "faults":
                kwargs[key] = self._build([key], Faults, value)
            elif key == "agents":
                kwargs[key] = self._agents(value)
            elif key == "v2_agents":
                kwargs[key] = self._v2_agents(value)
            elif key == "fault_rules":
                if not isinstance(value, list):
                    raise self.error([key], "must be a list")
                kwargs[key] = [self._build([key, i], FaultRule, v) for i, v in enumerate(value)]
            elif key in ("api_keys", "keys_without_role"):
                if isinstance(value, str):
                    value = [value]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise self.error([key], "must be a list of strings")
                kwargs[key] = value
            elif key in ("tenant_id", "client_id", "client_secret"):
                if not isinstance(value, str):
                    raise self.error([key], "must be a string")
                kwargs[key] = value
            elif key == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise self.error([key], "must be an integer")
                kwargs[key] = value
            else:  # token_lifetime, thread_ttl, run_lifetime, stall_limit
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise self.error([key], "must be a positive number")
                kwargs[key] = int(value) if key == "run_lifetime" else float(value)
        try:
            return EmulatorSettings(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{self.path}: {exc}") from exc

    def _agents(self, value: Any) -> list[AgentSpec]:
        if not isinstance(value, list):
            raise self.error(["agents"], "must be a list")
        agents = []
        for i, item in enumerate(value):
            keys: list[str | int] = ["agents", i]
            if not isinstance(item, dict):
                raise self.error(keys, "must be a mapping")
            if not isinstance(item.get("id"), str) or not item["id"]:
                raise self.error([*keys, "id"], "required string")
            item = dict(item)
            if "timing" in item and item["timing"] is not None:
                item["timing"] = self._build([*keys, "timing"], Timing, item["timing"])
            tools = item.get("tools", [])
            if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
            ):
                raise self.error([*keys, "tools"], "must be a list of tool objects with a type")
            for k in ("name", "instructions", "model", "description", "script"):
                if k in item and item[k] is not None and not isinstance(item[k], str):
                    raise self.error([*keys, k], "must be a string")
            agents.append(self._build(keys, AgentSpec, item))
        return agents

    def _v2_agents(self, value: Any) -> list[V2AgentSpec]:
        if not isinstance(value, list):
            raise self.error(["v2_agents"], "must be a list")
        agents = []
        for i, item in enumerate(value):
            keys: list[str | int] = ["v2_agents", i]
            if not isinstance(item, dict):
                raise self.error(keys, "must be a mapping")
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise self.error([*keys, "name"], "required string")
            item = dict(item)
            if isinstance(item.get("version"), int) and not isinstance(item["version"], bool):
                item["version"] = str(item["version"])
            if "timing" in item and item["timing"] is not None:
                item["timing"] = self._build([*keys, "timing"], Timing, item["timing"])
            tools = item.get("tools", [])
            if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("type"), str) for t in tools
            ):
                raise self.error([*keys, "tools"], "must be a list of tool objects with a type")
            for k in ("version", "instructions", "model", "description"):
                if k in item and not isinstance(item[k], str):
                    raise self.error([*keys, k], "must be a string")
            agents.append(self._build(keys, V2AgentSpec, item))
        return agents
