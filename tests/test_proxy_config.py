"""The proxy's config file: LiteLLM's shape, `os.environ/` references, errors with key and line."""

from __future__ import annotations

import logging
import pathlib
import textwrap

import pytest

from agentrun import cli
from agentrun._proxy_config import (
    DEFAULT_MAX_REQUEST_BYTES,
    ConfigError,
    load_config,
    parse_config,
)

#: The proxy config of the seed document (LiteLLM's page for this provider), as published.
SEED_CONFIG = """\
model_list:
  - model_name: azure-agent-1
    litellm_params:
      model: azure_ai/agents/asst_abc123
      api_base: https://your-resource.services.ai.azure.com/api/projects/your-project
      # Service Principal auth (recommended)
      tenant_id: os.environ/AZURE_TENANT_ID
      client_id: os.environ/AZURE_CLIENT_ID
      client_secret: os.environ/AZURE_CLIENT_SECRET

  - model_name: azure-agent-math-tutor
    litellm_params:
      model: azure_ai/agents/asst_def456
      api_base: https://your-resource.services.ai.azure.com/api/projects/your-project
      # Or pass Azure AD token directly
      api_key: os.environ/AZURE_AD_TOKEN
"""

SEED_ENV = {
    "AZURE_TENANT_ID": "your-tenant-id",
    "AZURE_CLIENT_ID": "your-client-id",
    "AZURE_CLIENT_SECRET": "your-client-secret",
    "AZURE_AD_TOKEN": "a-token",
}


def _parse(text: str, **env: str) -> object:
    return parse_config(textwrap.dedent(text), source="config.yaml", env=env)


def _error(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), source="config.yaml", env=env)
    return str(info.value)


def test_seed_config_loads_unchanged(tmp_path: pathlib.Path) -> None:
    """The seed document's config.yaml loads as written, with its env vars resolved, no
    warnings, and both deployments in order."""
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    config = load_config(path, env=SEED_ENV)
    assert config.warnings == ()
    assert config.master_key is None
    assert config.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
    first, second = config.deployments
    assert first.model_name == "azure-agent-1"
    assert first.agent_id == "asst_abc123"
    assert first.api_base == "https://your-resource.services.ai.azure.com/api/projects/your-project"
    assert (first.tenant_id, first.client_id, first.client_secret) == (
        "your-tenant-id",
        "your-client-id",
        "your-client-secret",
    )
    assert first.api_key is None
    assert first.line == 2
    assert second.model_name == "azure-agent-math-tutor"
    assert second.agent_id == "asst_def456"
    assert second.api_key == "a-token"
    assert second.tenant_id is None
    assert config.deployment("azure-agent-math-tutor") is second
    assert config.deployment("nope") is None
    # Secrets stay out of reprs.
    assert "your-client-secret" not in repr(config)
    assert "a-token" not in repr(config)


def test_missing_env_var_names_key_and_line() -> None:
    """An unset `os.environ/NAME` is an error naming the file, the line, the key and the
    variable."""
    env = dict(SEED_ENV)
    del env["AZURE_CLIENT_SECRET"]
    message = _error(SEED_CONFIG, **env)
    assert message == (
        "config.yaml, line 9: model_list[0].litellm_params.client_secret: environment "
        "variable AZURE_CLIENT_SECRET is not set"
    )
    message = _error(SEED_CONFIG, **{**SEED_ENV, "AZURE_AD_TOKEN": "  "})
    assert "line 16: model_list[1].litellm_params.api_key" in message
    assert "AZURE_AD_TOKEN is empty" in message


def test_invalid_yaml_names_line() -> None:
    """Invalid YAML is an error with the line of the problem."""
    message = _error(
        """\
        model_list:
          - model_name: a
            litellm_params:
              model: [unclosed
        """
    )
    assert message.startswith("config.yaml, line 5: invalid YAML")
    message = _error("model_list:\n  - model_name: a\n   bad: indent\n")
    assert message.startswith("config.yaml, line 3: invalid YAML")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model_list: {}\n", "line 1: model_list: must be a non-empty list"),
        ("model_list: []\n", "line 1: model_list: must be a non-empty list"),
        ("- a\n- b\n", "line 1: the config file: must be a mapping, not a list"),
        (
            "model_list:\n  - model_name: 5\n    litellm_params: {model: azure_ai/agents/a}\n",
            "line 2: model_list[0].model_name: must be a string, got 5",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params: [1]\n",
            "line 3: model_list[0].litellm_params: must be a mapping, not a list",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: azure_ai/agents/a\n      api_base: https://x\n      timeout: soon\n",
            "line 6: model_list[0].litellm_params.timeout: must be a positive number",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: azure_ai/agents/a\n      api_base: https://x\n      max_retries: -1\n",
            "line 6: model_list[0].litellm_params.max_retries: must be an integer of at least 0",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: azure_ai/agents/a\n      api_base: https://x\n      api_key: [k]\n",
            "line 6: model_list[0].litellm_params.api_key: must be a single value, not a list",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: openai/gpt-4o\n      api_base: https://x\n",
            "line 4: model_list[0].litellm_params.model: model 'openai/gpt-4o' is not an "
            "Azure AI Foundry agent",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: azure_ai/agents/a\n      api_base: ftp://x\n",
            "line 5: model_list[0].litellm_params.api_base: api_base must be an https:// URL",
        ),
        (
            "model_list:\n  - model_name: a\n    litellm_params:\n"
            "      model: azure_ai/agents/a\n      api_base: https://x\n"
            "      authority: http://login\n",
            "line 6: model_list[0].litellm_params.authority: must be an https:// URL",
        ),
        (
            "model_list:\n  - model_name: a\n",
            "line 2: model_list[0].litellm_params: is missing",
        ),
        (
            "model_list:\n  - litellm_params: {model: azure_ai/agents/a}\n",
            "line 2: model_list[0].model_name: is missing",
        ),
        (
            "general_settings: {master_key: 12}\nmodel_list: []\n",
            "line 1: general_settings.master_key: must be a string, got 12",
        ),
        (
            "litellm_settings: {drop_params: maybe}\nmodel_list: []\n",
            "line 1: litellm_settings.drop_params: must be true or false, got 'maybe'",
        ),
        ("general_settings: {}\n", "line 1: model_list: is missing"),
    ],
)
def test_wrong_types_name_key_and_line(text: str, expected: str) -> None:
    """Each wrong type or missing key is an error naming its key path and line."""
    assert expected in _error(text)


def test_empty_config() -> None:
    """An empty file says it needs a model_list."""
    assert "the config is empty" in _error("# nothing\n")


def test_duplicates_are_errors() -> None:
    """A model_name used twice, and a key given twice, are errors naming both lines."""
    message = _error(
        """\
        model_list:
          - model_name: a
            litellm_params: {model: azure_ai/agents/x, api_base: "https://h"}
          - model_name: a
            litellm_params: {model: azure_ai/agents/y, api_base: "https://h"}
        """
    )
    assert "line 4: model_list[1].model_name: 'a' is already used on line 2" in message
    message = _error(
        """\
        model_list:
          - model_name: a
            litellm_params:
              model: azure_ai/agents/x
              model: azure_ai/agents/y
        """
    )
    assert "line 5: model_list[0].litellm_params: key 'model' appears twice" in message
    assert "first on line 4" in message


def test_incomplete_service_principal() -> None:
    """tenant_id and client_id without client_secret is an error at the entry's params."""
    message = _error(
        """\
        model_list:
          - model_name: a
            litellm_params:
              model: azure_ai/agents/x
              api_base: https://h
              tenant_id: t
              client_id: c
        """
    )
    assert "line 4: model_list[0].litellm_params: incomplete service principal" in message
    assert "not client_secret" in message


def test_unknown_keys_are_warnings_with_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Unknown keys at any level are logged as warnings (with key and line) and kept in
    `warnings`, and the config still loads."""
    text = """\
    model_list:
      - model_name: a
        model_info: {id: 1}
        litellm_params:
          model: azure_ai/agents/x
          api_base: https://h
          api_key: k
          rpm: 10
    general_settings:
      master_key: sk-1
      database_url: postgres://
    router_settings: {}
    """
    with caplog.at_level(logging.WARNING, logger="agentrun.proxy"):
        config = _parse(text)
    assert config.warnings == (  # type: ignore[attr-defined]
        "config.yaml, line 12: router_settings: unknown key, ignored",
        "config.yaml, line 11: general_settings.database_url: unknown key, ignored",
        "config.yaml, line 3: model_list[0].model_info: unknown key, ignored",
        "config.yaml, line 8: model_list[0].litellm_params.rpm: unknown key, ignored",
    )
    assert [r.getMessage() for r in caplog.records] == list(config.warnings)  # type: ignore[attr-defined]


def test_settings_and_extensions(tmp_path: pathlib.Path) -> None:
    """master_key, max_request_size_mb, drop_params, timeout, max_retries, pool_limit,
    authority and a relative `verify` path (resolved next to the config) are read, and
    `os.environ/` works for numbers and booleans too."""
    (tmp_path / "ca.pem").write_text("not checked here")
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            model_list:
              - model_name: a
                litellm_params:
                  model: azure_ai/agents/x
                  api_base: https://h/api/projects/p/
                  api_key: k
                  api_version: "2025-05-01"
                  instructions: Be brief.
                  timeout: os.environ/RUN_TIMEOUT
                  max_retries: 0
                  pool_limit: 7
                  drop_params: os.environ/DROP
                  verify: ca.pem
                  authority: https://login.example
            general_settings:
              master_key: os.environ/LITELLM_MASTER_KEY
              max_request_size_mb: 0.5
            litellm_settings:
              drop_params: true
            """
        )
    )
    env = {"RUN_TIMEOUT": "12.5", "DROP": "false", "LITELLM_MASTER_KEY": "sk-secret"}
    config = load_config(path, env=env)
    (d,) = config.deployments
    assert config.master_key == "sk-secret"
    assert config.max_request_bytes == 512 * 1024
    assert config.drop_params is True
    assert d.api_base == "https://h/api/projects/p"
    assert d.api_version == "2025-05-01"
    assert d.instructions == "Be brief."
    assert d.timeout == 12.5
    assert d.max_retries == 0
    assert d.pool_limit == 7
    assert d.drop_params is False
    assert d.verify == str(tmp_path / "ca.pem")
    assert d.authority == "https://login.example"
    assert "sk-secret" not in repr(config)


def test_verify_file_must_exist(tmp_path: pathlib.Path) -> None:
    """A `verify` path that does not exist is an error with its line."""
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n  - model_name: a\n    litellm_params:\n"
        "      model: azure_ai/agents/x\n      api_base: https://h\n      verify: nope.pem\n"
    )
    with pytest.raises(ConfigError, match=r"line 6: .*verify: CA bundle .*nope\.pem' not found"):
        load_config(path, env={})


def test_api_base_from_environment() -> None:
    """Without api_base the deployment uses AZURE_AI_API_BASE; with neither it is an error."""
    text = "model_list:\n  - model_name: a\n    litellm_params:\n      model: azure_ai/agents/x\n"
    config = _parse(text, AZURE_AI_API_BASE="https://env/api/projects/p")
    assert config.deployments[0].api_base == "https://env/api/projects/p"  # type: ignore[attr-defined]
    assert "line 4: model_list[0].litellm_params.api_base: is missing" in _error(text)


def test_missing_file() -> None:
    """A missing file is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/config.yaml")


def test_cli_check(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentrun serve --check` validates the seed config (exit 0) and reports a bad one with
    key and line (exit 3)."""
    for name, value in SEED_ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(SEED_CONFIG)
    assert cli.main(["serve", "--config", str(path), "--check"]) == 0
    assert "OK, 2 model(s): azure-agent-1, azure-agent-math-tutor" in capsys.readouterr().out
    monkeypatch.delenv("AZURE_TENANT_ID")
    assert cli.main(["serve", "--config", str(path), "--check"]) == 3
    err = capsys.readouterr().err
    assert "line 7: model_list[0].litellm_params.tenant_id" in err
    assert "AZURE_TENANT_ID is not set" in err
