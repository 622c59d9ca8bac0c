"""The proxy's configuration file: LiteLLM's `config.yaml` shape, checked with line numbers.

```yaml
model_list:
  - model_name: azure-agent-1                 # the name OpenAI clients send as `model`
    litellm_params:
      model: azure_ai/agents/asst_abc123
      api_base: https://<resource>.services.ai.azure.com/api/projects/<project>
      tenant_id: os.environ/AZURE_TENANT_ID   # `os.environ/NAME` reads a variable
      client_id: os.environ/AZURE_CLIENT_ID
      client_secret: os.environ/AZURE_CLIENT_SECRET
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY   # clients send `Authorization: Bearer <key>`
```

The file is composed to YAML nodes first, so that every error names the key and the line it
came from: invalid YAML, a wrong type, a missing environment variable. Keys agentrun does not
know are reported as warnings (logged, and kept in `ProxyConfig.warnings`), not errors, so a
LiteLLM config with settings agentrun has no use for still loads.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import attrs
import yaml

from agentrun._credentials import check_api_base, default_api_base, process_environment
from agentrun._errors import ConfigurationError
from agentrun._openai import parse_model

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "ConfigError",
    "Deployment",
    "ProxyConfig",
    "load_config",
    "parse_config",
]

logger = logging.getLogger("agentrun.proxy")

ENV_PREFIX = "os.environ/"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024

_TOP_KEYS = frozenset({"model_list", "general_settings", "litellm_settings"})
_ENTRY_KEYS = frozenset({"model_name", "litellm_params"})
_PARAM_KEYS = frozenset(
    {
        # LiteLLM's own keys for this provider
        "model",
        "api_base",
        "api_key",
        "tenant_id",
        "client_id",
        "client_secret",
        "api_version",
        "instructions",
        "timeout",
        "max_retries",
        "drop_params",
        # agentrun extensions
        "verify",
        "authority",
        "pool_limit",
        "allow_insecure_http",
    }
)
#: A model name: what clients send as `model` and what responses carry. Checked against the
#: whole string (`fullmatch`): printable, no line breaks or control characters, 1-256 long.
_MODEL_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_GENERAL_KEYS = frozenset({"master_key", "max_request_size_mb"})
_LITELLM_SETTINGS_KEYS = frozenset({"drop_params"})


class ConfigError(ConfigurationError):
    """The proxy's configuration file is invalid. The message names the file, line and key."""


@attrs.frozen
class Deployment:
    """One `model_list` entry: the model name clients use and the agent it reaches."""

    model_name: str
    model: str
    agent_id: str
    api_base: str
    api_key: str | None = attrs.field(default=None, repr=False)
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False)
    api_version: str | None = None
    instructions: str | None = None
    timeout: float | None = None
    max_retries: int | None = None
    drop_params: bool | None = None
    verify: bool | str = True
    authority: str | None = None
    pool_limit: int | None = None
    #: `allow_insecure_http` from the entry (an http:// api_base off loopback was allowed)
    allow_insecure_http: bool | None = None
    #: where the entry starts, for errors found later (e.g. when its client is created)
    source: str = "<config>"
    line: int = 0

    def where(self) -> str:
        return f"{self.source}, line {self.line}: model_list entry {self.model_name!r}"


@attrs.frozen
class ProxyConfig:
    """A loaded, validated proxy configuration."""

    deployments: tuple[Deployment, ...]
    master_key: str | None = attrs.field(default=None, repr=False)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drop_params: bool = False
    source: str = "<config>"
    warnings: tuple[str, ...] = ()

    def deployment(self, model_name: str) -> Deployment | None:
        for d in self.deployments:
            if d.model_name == model_name:
                return d
        return None


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> ProxyConfig:
    """Read and validate a config file (`os.environ/NAME` is looked up in `env`, default
    `os.environ`). Raises `ConfigError`; logs a warning for each unknown key."""
    p = pathlib.Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config file: {exc}") from None
    return parse_config(text, source=str(p), env=env, base_dir=p.parent)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> ProxyConfig:
    """Validate config text (see `load_config`). Relative `verify` paths are resolved against
    `base_dir` (default: the working directory)."""
    reader = _Reader(source, process_environment() if env is None else env, base_dir)
    config = reader.read(text)
    for warning in config.warnings:
        logger.warning("%s", warning)
    return config


# -- the reader ------------------------------------------------------------------------------


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a scalar"


class _Reader:
    def __init__(
        self, source: str, env: Mapping[str, str], base_dir: str | os.PathLike[str] | None
    ) -> None:
        self.source = source
        self.env = env
        self.base_dir = pathlib.Path(base_dir) if base_dir is not None else None
        self.warnings: list[str] = []
        self._loader = yaml.SafeLoader("")

    # errors and warnings

    def error(self, node: yaml.Node | None, key: str, problem: str) -> ConfigError:
        where = f"{self.source}, line {_line(node)}" if node is not None else self.source
        return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")

    def warn(self, node: yaml.Node, key: str, problem: str) -> None:
        self.warnings.append(f"{self.source}, line {_line(node)}: {key}: {problem}")

    # structure

    def read(self, text: str) -> ProxyConfig:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f", line {mark.line + 1}" if mark is not None else ""
            what = " ".join(str(p) for p in (exc.context, exc.problem) if p)
            raise ConfigError(f"{self.source}{line}: invalid YAML: {what}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.source}: invalid YAML: {exc}") from None
        if root is None:
            raise ConfigError(f"{self.source}: the config is empty; it needs a model_list")
        top = self.mapping(root, "the config file")
        self.unknown(top, "", _TOP_KEYS)

        general = top.get("general_settings")
        master_key: str | None = None
        max_bytes = DEFAULT_MAX_REQUEST_BYTES
        if general is not None and not self.is_null(general[1]):
            gen = self.mapping(general[1], "general_settings")
            self.unknown(gen, "general_settings.", _GENERAL_KEYS)
            master_key = self.opt_str(gen, "master_key", "general_settings.master_key")
            if master_key is not None and not master_key.strip():
                raise self.error(
                    gen["master_key"][1], "general_settings.master_key", "must not be empty"
                )
            size = self.opt_number(gen, "max_request_size_mb", "general_settings.")
            if size is not None:
                max_bytes = max(1, int(size * 1024 * 1024))

        settings = top.get("litellm_settings")
        drop_params = False
        if settings is not None and not self.is_null(settings[1]):
            lset = self.mapping(settings[1], "litellm_settings")
            self.unknown(lset, "litellm_settings.", _LITELLM_SETTINGS_KEYS)
            drop_params = bool(self.opt_bool(lset, "drop_params", "litellm_settings."))

        if "model_list" not in top:
            raise self.error(root, "model_list", "is missing: list at least one model")
        list_node = top["model_list"][1]
        if not isinstance(list_node, yaml.SequenceNode) or not list_node.value:
            raise self.error(list_node, "model_list", "must be a non-empty list of models")
        deployments: list[Deployment] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(list_node.value):
            d = self.deployment(entry, f"model_list[{i}]")
            if d.model_name in seen:
                raise self.error(
                    entry,
                    f"model_list[{i}].model_name",
                    f"{d.model_name!r} is already used on line {seen[d.model_name]}; each "
                    "model_name names one deployment",
                )
            seen[d.model_name] = d.line
            deployments.append(d)
        return ProxyConfig(
            deployments=tuple(deployments),
            master_key=master_key,
            max_request_bytes=max_bytes,
            drop_params=drop_params,
            source=self.source,
            warnings=tuple(self.warnings),
        )

    def deployment(self, node: yaml.Node, path: str) -> Deployment:
        entry = self.mapping(node, path)
        self.unknown(entry, path + ".", _ENTRY_KEYS)
        name = self.req_str(entry, "model_name", path + ".", node)
        if not name.strip():
            raise self.error(entry["model_name"][1], path + ".model_name", "must not be empty")
        if not _MODEL_NAME.fullmatch(name):
            raise self.error(
                entry["model_name"][1],
                path + ".model_name",
                "must be 1 to 256 printable characters (no line breaks or control characters)",
            )
        if "litellm_params" not in entry:
            raise self.error(node, path + ".litellm_params", "is missing")
        pnode = entry["litellm_params"][1]
        params = self.mapping(pnode, path + ".litellm_params")
        pp = path + ".litellm_params."
        self.unknown(params, pp, _PARAM_KEYS)
        model = self.req_str(params, "model", pp, pnode)
        try:
            agent_id = parse_model(model)
        except ConfigurationError as exc:
            raise self.error(params["model"][1], pp + "model", str(exc)) from None

        api_base = self.opt_str(params, "api_base", pp + "api_base")
        if api_base is None:
            api_base = default_api_base(self.env)
            if api_base is None:
                raise self.error(
                    pnode,
                    pp + "api_base",
                    "is missing and AZURE_AI_API_BASE is not set: give the project endpoint, "
                    "https://<resource>.services.ai.azure.com/api/projects/<project>",
                )
        allow_insecure_http = self.opt_bool(params, "allow_insecure_http", pp)
        try:
            api_base = check_api_base(
                api_base, allow_insecure_http=allow_insecure_http, env=self.env
            )
        except ConfigurationError as exc:
            where = params["api_base"][1] if "api_base" in params else pnode
            raise self.error(where, pp + "api_base", str(exc)) from None

        sp = {
            k: self.opt_str(params, k, pp + k) for k in ("tenant_id", "client_id", "client_secret")
        }
        given = [k for k, v in sp.items() if v]
        if given and len(given) < 3:
            missing = [k for k in sp if not sp[k]]
            raise self.error(
                pnode,
                pp.rstrip("."),
                f"incomplete service principal: has {', '.join(given)} but not "
                f"{', '.join(missing)}",
            )

        verify: bool | str = True
        if "verify" in params:
            vnode = params["verify"][1]
            value = self.value(vnode, pp + "verify")
            if isinstance(value, bool):
                verify = value
            elif isinstance(value, str) and value.strip():
                path_ = pathlib.Path(value).expanduser()
                if not path_.is_absolute() and self.base_dir is not None:
                    path_ = self.base_dir / path_
                if not path_.is_file():
                    raise self.error(vnode, pp + "verify", f"CA bundle {str(path_)!r} not found")
                verify = str(path_)
            else:
                raise self.error(
                    vnode, pp + "verify", "must be true, false or the path of a CA bundle"
                )

        authority = self.opt_str(params, "authority", pp + "authority")
        if authority is not None and not authority.startswith("https://"):
            raise self.error(params["authority"][1], pp + "authority", "must be an https:// URL")
        timeout = self.opt_number(params, "timeout", pp)
        max_retries = self.opt_int(params, "max_retries", pp, minimum=0)
        pool_limit = self.opt_int(params, "pool_limit", pp, minimum=1)
        return Deployment(
            model_name=name,
            model=model,
            agent_id=agent_id,
            api_base=api_base.rstrip("/"),
            api_key=self.opt_str(params, "api_key", pp + "api_key"),
            tenant_id=sp["tenant_id"],
            client_id=sp["client_id"],
            client_secret=sp["client_secret"],
            api_version=self.opt_str(params, "api_version", pp + "api_version"),
            instructions=self.opt_str(params, "instructions", pp + "instructions"),
            timeout=timeout,
            max_retries=max_retries,
            drop_params=self.opt_bool(params, "drop_params", pp),
            verify=verify,
            authority=authority,
            pool_limit=pool_limit,
            allow_insecure_http=allow_insecure_http,
            source=self.source,
            line=_line(node),
        )

    # node helpers

    def mapping(self, node: yaml.Node, key: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """A mapping node's entries by key: (key node, value node)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, f"must be a mapping, not {_kind(node)}")
        self._loader.flatten_mapping(node)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            k = self._loader.construct_object(knode, deep=True)
            if not isinstance(k, str):
                raise self.error(knode, key, f"keys must be strings, got {k!r}")
            if k in out:
                raise self.error(
                    knode, key, f"key {k!r} appears twice (first on line {_line(out[k][0])})"
                )
            out[k] = (knode, vnode)
        return out

    def unknown(
        self, entries: Mapping[str, tuple[yaml.Node, yaml.Node]], prefix: str, known: frozenset[str]
    ) -> None:
        for k, (knode, _v) in entries.items():
            if k not in known:
                self.warn(knode, prefix + k, "unknown key, ignored")

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"

    def value(self, node: yaml.Node, key: str) -> Any:
        """A scalar's value, with `os.environ/NAME` resolved."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, key, f"must be a single value, not {_kind(node)}")
        value = self._loader.construct_object(node, deep=True)
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX) :].strip()
            if not name:
                raise self.error(node, key, f"{value!r} names no environment variable")
            if name not in self.env:
                raise self.error(node, key, f"environment variable {name} is not set")
            resolved = self.env[name]
            if not resolved.strip():
                raise self.error(node, key, f"environment variable {name} is empty")
            return resolved
        return value

    def opt_str(
        self, entries: Mapping[str, tuple[yaml.Node, yaml.Node]], name: str, key: str
    ) -> str | None:
        if name not in entries:
            return None
        node = entries[name][1]
        if self.is_null(node):
            return None
        value = self.value(node, key)
        if not isinstance(value, str):
            raise self.error(node, key, f"must be a string, got {value!r}")
        return value

    def req_str(
        self,
        entries: Mapping[str, tuple[yaml.Node, yaml.Node]],
        name: str,
        prefix: str,
        parent: yaml.Node,
    ) -> str:
        value = self.opt_str(entries, name, prefix + name)
        if value is None:
            raise self.error(parent, prefix + name, "is missing")
        return value

    def _env_scalar(self, node: yaml.Node, key: str) -> Any:
        value = self.value(node, key)
        raw = self._loader.construct_object(node, deep=True)
        if isinstance(raw, str) and raw.startswith(ENV_PREFIX) and isinstance(value, str):
            # A variable's text is read as a YAML scalar: "30" is a number, "true" a boolean.
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
        return value

    def opt_number(
        self, entries: Mapping[str, tuple[yaml.Node, yaml.Node]], name: str, prefix: str
    ) -> float | None:
        if name not in entries or self.is_null(entries[name][1]):
            return None
        node = entries[name][1]
        value = self._env_scalar(node, prefix + name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.error(node, prefix + name, f"must be a positive number, got {value!r}")
        return float(value)

    def opt_int(
        self,
        entries: Mapping[str, tuple[yaml.Node, yaml.Node]],
        name: str,
        prefix: str,
        *,
        minimum: int,
    ) -> int | None:
        if name not in entries or self.is_null(entries[name][1]):
            return None
        node = entries[name][1]
        value = self._env_scalar(node, prefix + name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(
                node, prefix + name, f"must be an integer of at least {minimum}, got {value!r}"
            )
        return value

    def opt_bool(
        self, entries: Mapping[str, tuple[yaml.Node, yaml.Node]], name: str, prefix: str
    ) -> bool | None:
        if name not in entries or self.is_null(entries[name][1]):
            return None
        node = entries[name][1]
        value = self._env_scalar(node, prefix + name)
        if not isinstance(value, bool):
            raise self.error(node, prefix + name, f"must be true or false, got {value!r}")
        return value
