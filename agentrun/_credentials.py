"""Credential resolution, and the one place that reads agentrun's environment variables.

`resolve_token_source` turns what the caller passed (and, failing that, the environment) into a
`TokenSource`, most specific first:

1. an explicit `credential` (any azure-identity async credential; the caller keeps owning it),
2. an explicit `api_key` (a static Entra ID token),
3. explicit `tenant_id` / `client_id` / `client_secret` (a service principal),
4. env `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET`,
5. env `AZURE_AD_TOKEN`.

Secrets are never put in a repr or an error message.

Every environment variable agentrun reads is read here (`environment`, `env_flag`,
`env_value`), and listed in `ENV_VARIABLES`:

| Variable | Read for |
|---|---|
| `AZURE_AI_API_BASE` | the default `api_base` |
| `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` | a service principal |
| `AZURE_AUTHORITY_HOST` | the service principal's authority |
| `AZURE_AD_TOKEN` | a static Entra ID token |
| `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` | the CA bundle behind `verify=True` |
| `AGENTRUN_ALLOW_INSECURE_HTTP` | allow an `http://` api_base off the loopback |
| `OTEL_SEMCONV_STABILITY_OPT_IN` | telemetry: the newest GenAI conventions |
| `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` | telemetry: record message texts |
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from agentrun._auth import (
    DEFAULT_SCOPE,
    CredentialTokenSource,
    StaticTokenSource,
    TokenSource,
)
from agentrun._errors import ConfigurationError

__all__ = [
    "ALLOW_INSECURE_HTTP_ENV",
    "CONNECTION_ENV",
    "ENV_VARIABLES",
    "check_api_base",
    "check_credentials",
    "default_api_base",
    "env_flag",
    "env_value",
    "environment",
    "process_environment",
    "resolve_token_source",
    "resolve_verify",
]

#: Set to 1/true/yes to allow an http:// api_base on a host other than the loopback.
ALLOW_INSECURE_HTTP_ENV = "AGENTRUN_ALLOW_INSECURE_HTTP"
_TRUE = frozenset({"1", "true", "yes", "on"})

_SP_ARGS = ("tenant_id", "client_id", "client_secret")
_SP_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
#: CA bundle variables behind `verify=True`, in this order (OpenSSL's, then requests').
_CA_BUNDLE_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
#: The variables that decide which service, credentials and trust a client gets.
CONNECTION_ENV = (
    "AZURE_AI_API_BASE",
    *_SP_ENV,
    "AZURE_AUTHORITY_HOST",
    "AZURE_AD_TOKEN",
    *_CA_BUNDLE_ENV,
    ALLOW_INSECURE_HTTP_ENV,
)
#: The variables whose values are secrets (never in a repr; compared by digest).
SECRET_ENV = frozenset({"AZURE_CLIENT_SECRET", "AZURE_AD_TOKEN"})
#: Every variable agentrun reads (the table in the module docstring and docs/configuration).
ENV_VARIABLES = (
    *CONNECTION_ENV,
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The connection variables set (non-empty) in `env` (default `os.environ`), by name.

    A snapshot: settings built from it do not change when the environment does later.
    """
    source = os.environ if env is None else env
    out: dict[str, str] = {}
    for name in CONNECTION_ENV:
        value = source.get(name)
        if value is not None and value.strip():
            out[name] = value
    return out


def process_environment() -> Mapping[str, str]:
    """The process environment, for a config file's ``os.environ/NAME`` references (the
    proxy's config names its variables itself; none of agentrun's own are read this way)."""
    return os.environ


def env_value(name: str) -> str | None:
    """One of `ENV_VARIABLES` from `os.environ`, stripped (None when unset or empty)."""
    if name not in ENV_VARIABLES:
        raise KeyError(f"{name} is not a variable agentrun reads")
    value = os.environ.get(name, "").strip()
    return value or None


def env_flag(name: str) -> bool:
    """Whether one of `ENV_VARIABLES` is set to 1/true/yes/on (any case)."""
    return (env_value(name) or "").lower() in _TRUE


def resolve_verify(verify: Any, env: Mapping[str, str] | None = None) -> Any:
    """What `verify` means for the service: True becomes the CA bundle named by
    `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE` in `env` (default `os.environ`) when one is set,
    as for the token endpoint and `acompletion`; anything else is returned as given."""
    if verify is not True:
        return verify
    source = os.environ if env is None else env
    for name in _CA_BUNDLE_ENV:
        value = source.get(name, "").strip()
        if value:
            return value
    return True


def default_api_base(env: Mapping[str, str] | None = None) -> str | None:
    """The default base URL, from `AZURE_AI_API_BASE` (None when unset or empty)."""
    env = os.environ if env is None else env
    value = env.get("AZURE_AI_API_BASE", "").strip()
    return value or None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_base(
    api_base: str,
    *,
    allow_insecure_http: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """`api_base` without its trailing slash, if it is safe to send a bearer token to.

    `https://` is always accepted; `http://` only on a loopback host (127.0.0.0/8, ::1,
    localhost: the emulator, a local proxy), since the token would otherwise travel in clear
    text. `allow_insecure_http=True` (else env `AGENTRUN_ALLOW_INSECURE_HTTP=1`) allows it
    anywhere. Raises `ConfigurationError` for any other scheme, a URL without a host, a user
    name or password in the URL, a query or fragment (neither is echoed), or a refused
    `http://` URL.
    """
    env = os.environ if env is None else env
    if not isinstance(api_base, str) or not api_base.strip():
        raise ConfigurationError("api_base is empty: pass the project endpoint URL")
    base = api_base.strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(
            f"api_base must be an https:// URL with a host, like https://<resource>.services.ai."
            f"azure.com/api/projects/<project>; got {base!r}"
        )
    if parts.username is not None or parts.password is not None:
        # Never echo it: the URL carries a secret.
        raise ConfigurationError(
            "api_base must not carry a user name or password (https://user:secret@...): pass "
            "credentials as api_key=, a credential= or a service principal"
        )
    if parts.query or parts.fragment or any(c in base for c in "\r\n\t "):
        # The query may carry a secret (a SAS-style ?sig=...): name the URL without it.
        shown = f"{parts.scheme}://{parts.hostname}{parts.path}"
        raise ConfigurationError(
            f"api_base must not contain a query, fragment or spaces: {shown!r} (query or "
            "fragment not shown)"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        if allow_insecure_http is None:
            allow_insecure_http = env.get(ALLOW_INSECURE_HTTP_ENV, "").strip().lower() in _TRUE
        if not allow_insecure_http:
            raise ConfigurationError(
                f"api_base {base!r} is plain http:// on a host that is not the loopback: the "
                "access token would travel in clear text. Use https://, or allow it explicitly "
                f"with allow_insecure_http=True (env {ALLOW_INSECURE_HTTP_ENV}=1, CLI "
                "--allow-insecure-http)"
            )
    return base


def check_credentials(
    *,
    credential: Any = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Which credentials these arguments (else `env`, default `os.environ`) select, without
    building anything: "credential", "api_key", "service_principal", "env_service_principal"
    or "env_token". Raises `ConfigurationError` for incomplete service-principal arguments
    or when nothing usable is found."""
    env = os.environ if env is None else env
    if credential is not None:
        return "credential"
    if api_key is not None:
        if not api_key.strip():
            raise ConfigurationError("api_key is empty: pass an Entra ID access token")
        return "api_key"
    explicit = {"tenant_id": tenant_id, "client_id": client_id, "client_secret": client_secret}
    given = [name for name, value in explicit.items() if value]
    if given:
        missing = [name for name in _SP_ARGS if not explicit[name]]
        if missing:
            raise ConfigurationError(
                f"incomplete service principal: got {_join(given)} but not {_join(missing)}; "
                "pass all of tenant_id, client_id and client_secret"
            )
        return "service_principal"
    from_env = {name: env.get(name, "").strip() for name in _SP_ENV}
    if all(from_env.values()):
        return "env_service_principal"
    if env.get("AZURE_AD_TOKEN", "").strip():
        return "env_token"
    partial_env = [name for name, value in from_env.items() if value]
    hint = ""
    if partial_env:
        unset = [name for name, value in from_env.items() if not value]
        hint = f" (the environment has {_join(partial_env)} but not {_join(unset)})"
    raise ConfigurationError(
        "no credentials found: pass credential= (an azure-identity async credential), "
        "api_key= (an Entra ID access token), or tenant_id=, client_id= and client_secret=; "
        "or set the environment variables AZURE_TENANT_ID, AZURE_CLIENT_ID and "
        f"AZURE_CLIENT_SECRET, or AZURE_AD_TOKEN{hint}"
    )


def resolve_token_source(
    *,
    credential: Any = None,
    api_key: str | None = None,
    tenant_id: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    authority: str | None = None,
    verify: bool | str = True,
    env: Mapping[str, str] | None = None,
    scope: str = DEFAULT_SCOPE,
) -> TokenSource:
    """The token source for these arguments, else for the environment (`os.environ` by default).

    `authority` (else env `AZURE_AUTHORITY_HOST`) and `verify` (a CA bundle path, or False to
    skip TLS verification) apply to a service-principal credential that agentrun builds.
    Raises `ConfigurationError` as `check_credentials` does.
    """
    env = os.environ if env is None else env
    kind = check_credentials(
        credential=credential,
        api_key=api_key,
        tenant_id=tenant_id,
        client_id=client_id,
        client_secret=client_secret,
        env=env,
    )
    if kind == "credential":
        return CredentialTokenSource(credential, scope, owns_credential=False)
    if kind == "api_key":
        assert api_key is not None
        return StaticTokenSource(api_key.strip())
    if kind == "env_token":
        return StaticTokenSource(env.get("AZURE_AD_TOKEN", "").strip())
    if kind == "service_principal":
        ids = (tenant_id or "", client_id or "", client_secret or "")
    else:
        ids = tuple(env.get(name, "").strip() for name in _SP_ENV)  # type: ignore[assignment]
    return _service_principal(
        *ids,
        authority=authority or env.get("AZURE_AUTHORITY_HOST") or None,
        verify=verify,
        scope=scope,
        env=env,
    )


def _join(names: list[str]) -> str:
    return ", ".join(names)


def _service_principal(
    tenant_id: str,
    client_id: str,
    client_secret: str,
    *,
    authority: str | None,
    verify: bool | str,
    scope: str,
    env: Mapping[str, str],
) -> TokenSource:
    from azure.identity import AzureAuthorityHosts
    from azure.identity.aio import ClientSecretCredential

    # Always pass the authority, so azure-identity does not read AZURE_AUTHORITY_HOST from
    # os.environ behind the `env` mapping the caller gave us.
    kwargs: dict[str, Any] = {"authority": authority or AzureAuthorityHosts.AZURE_PUBLIC_CLOUD}
    if verify is False or isinstance(verify, str):
        kwargs["connection_verify"] = verify
    else:
        # azure-identity's aiohttp transport trusts what aiohttp loaded at import time, so a CA
        # bundle named in the environment later would be ignored: name it explicitly.
        bundle = resolve_verify(True, env)
        if isinstance(bundle, str):
            kwargs["connection_verify"] = bundle
    try:
        credential = ClientSecretCredential(tenant_id, client_id, client_secret, **kwargs)
    except ValueError as exc:
        # e.g. an http:// authority, or a malformed tenant id; azure-identity's message names
        # the offending value, which is not a secret.
        raise ConfigurationError(f"invalid service principal settings: {exc}") from exc
    return CredentialTokenSource(credential, scope, owns_credential=True)
