"""`ConnectionSettings`: which service, credentials and trust a client uses, as one value.

Like httpx's `Timeout` and `Limits`: a frozen, slotted attrs value, validated once when it is
made, and hashable, so it is the key under which clients are shared (the module-level registry
of `acompletion`, the proxy's deployments). Secrets (`api_key`, `client_secret`, secret
environment variables) are kept out of its repr and compared and hashed through a SHA-256
digest, never by their text; an azure-identity `credential` or an `ssl.SSLContext` is compared
by identity.

What the settings do not say is taken from the environment once, when they are made
(`agentrun._credentials.environment`): two settings made under different environments are
different settings.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from typing import Any

import attrs

from agentrun._auth import TokenSource
from agentrun._credentials import (
    SECRET_ENV,
    check_api_base,
    check_credentials,
    default_api_base,
    environment,
    resolve_token_source,
    resolve_verify,
)
from agentrun._errors import ConfigurationError
from agentrun._retry import RetryPolicy

__all__ = ["ConnectionSettings"]


def _digest(value: str | None) -> str | None:
    """A secret's comparison key: its digest, so no comparison runs over the secret's text."""
    if value is None:
        return None
    return hashlib.sha256(value.encode()).hexdigest()


def _identity(value: object) -> int | None:
    # A credential or an SSLContext is the same only if it is the same object; the settings
    # hold it, so its id stays unique while they live.
    return None if value is None else id(value)


def _env_key(env: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str | None], ...]:
    return tuple((k, _digest(v) if k in SECRET_ENV else v) for k, v in env)


def _snapshot(env: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(environment(env).items()))


def _verify_key(value: bool | str | ssl.SSLContext) -> object:
    return ("ctx", id(value)) if isinstance(value, ssl.SSLContext) else value


def _api_base(value: str | None) -> str:
    return "" if value is None else value


def _retry_policy(value: RetryPolicy | None) -> RetryPolicy:
    return RetryPolicy() if value is None else value


def _is_default(name: str, value: object) -> bool:
    default = _CLIENT_DEFAULTS[name]
    return value is default or (type(value) is type(default) and value == default)


#: The defaults of a client's connection keyword arguments (`AsyncClient`, `Client`).
_CLIENT_DEFAULTS: dict[str, Any] = {
    "api_base": None,
    "credential": None,
    "api_key": None,
    "tenant_id": None,
    "client_id": None,
    "client_secret": None,
    "authority": None,
    "api_version": "v1",
    "verify": True,
    "pool_limit": 100,
    "retry_policy": None,
    "allow_insecure_http": None,
    "env": None,
}


@attrs.frozen(kw_only=True)
class ConnectionSettings:
    """One service connection: endpoint, credentials, TLS trust, pool size and retry policy.

    ```python
    settings = agentrun.ConnectionSettings(
        api_base="https://my-resource.services.ai.azure.com/api/projects/my-project",
        api_key="<an Entra ID access token>",
        pool_limit=50,
    )
    ```

    `api_base` defaults to env `AZURE_AI_API_BASE`; it must be `https://`, or `http://` on a
    loopback host or with `allow_insecure_http=True` (env `AGENTRUN_ALLOW_INSECURE_HTTP=1`).
    Credentials are chosen in `AsyncClient`'s order (`credential`, `api_key`, `tenant_id` /
    `client_id` / `client_secret`, then env `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` /
    `AZURE_CLIENT_SECRET`, then env `AZURE_AD_TOKEN`). `verify` is True (system trust, or the
    CA bundle named by env `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE`), a CA bundle path, an
    `ssl.SSLContext` (the service only; the token endpoint needs a path), or False.
    `pool_limit` is the number of pooled connections (>= 1). `env` (default `os.environ`) is
    read once, here. Raises `ConfigurationError` for a bad or missing api_base, missing or
    incomplete credentials, or a bad value; `TypeError` for an unknown field.

    Settings are equal when they would connect the same way; use them as a cache key.
    """

    api_base: str = attrs.field(default=None, converter=_api_base)  # None: from the env
    credential: Any = attrs.field(default=None, eq=_identity)
    api_key: str | None = attrs.field(default=None, repr=False, eq=_digest)
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = attrs.field(default=None, repr=False, eq=_digest)
    authority: str | None = None
    api_version: str = "v1"
    verify: bool | str | ssl.SSLContext = attrs.field(default=True, eq=_verify_key)
    pool_limit: int = 100
    retry_policy: RetryPolicy = attrs.field(default=None, converter=_retry_policy)
    allow_insecure_http: bool | None = None
    env: tuple[tuple[str, str], ...] = attrs.field(
        default=None, converter=_snapshot, repr=False, eq=_env_key
    )

    def __attrs_post_init__(self) -> None:
        env = self.environ
        base = self.api_base or default_api_base(env)
        if not base:
            raise ConfigurationError(
                "no api_base: pass api_base= (https://<resource>.services.ai.azure.com/api/"
                "projects/<project>) or set AZURE_AI_API_BASE"
            )
        # Tokens must not travel in clear text: http:// only on loopback unless allowed.
        base = check_api_base(base, allow_insecure_http=self.allow_insecure_http, env=env)
        object.__setattr__(self, "api_base", base)
        if isinstance(self.pool_limit, bool) or not isinstance(self.pool_limit, int):
            raise ConfigurationError(f"pool_limit must be a whole number, got {self.pool_limit!r}")
        if self.pool_limit < 1:
            raise ConfigurationError("pool_limit must be at least 1")
        if not isinstance(self.api_version, str) or not self.api_version.strip():
            raise ConfigurationError(f"api_version must be non-empty text: {self.api_version!r}")
        if not isinstance(self.verify, (bool, str, ssl.SSLContext)):
            raise ConfigurationError(
                "verify must be True, False, a CA bundle path or an ssl.SSLContext, "
                f"not {self.verify!r}"
            )
        if not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigurationError(f"retry_policy must be a RetryPolicy: {self.retry_policy!r}")
        check_credentials(
            credential=self.credential,
            api_key=self.api_key,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            env=env,
        )

    @property
    def environ(self) -> dict[str, str]:
        """The environment variables these settings were made under (connection ones only)."""
        return dict(self.env)

    @property
    def service_verify(self) -> bool | str | ssl.SSLContext:
        """`verify` as the service connection applies it (True: the env CA bundle, if any)."""
        resolved: bool | str | ssl.SSLContext = resolve_verify(self.verify, self.environ)
        return resolved

    @classmethod
    def given(cls, settings: ConnectionSettings | None, **arguments: Any) -> ConnectionSettings:
        """`settings`, or the settings `arguments` (a client's connection keyword arguments)
        make when it is None. Raises `ConfigurationError` when both are given (an argument
        other than its default alongside `settings`), or for a `settings` of another type."""
        if settings is None:
            return cls(**arguments)
        if not isinstance(settings, ConnectionSettings):
            raise ConfigurationError(f"settings must be a ConnectionSettings, got {settings!r}")
        given = [name for name, value in arguments.items() if not _is_default(name, value)]
        if given:
            raise ConfigurationError(
                f"pass either settings= or connection arguments, not both (got settings and "
                f"{', '.join(given)}); use settings.replace(...) to change a field"
            )
        return settings

    def replace(self, **changes: Any) -> ConnectionSettings:
        """A copy with `changes` applied (validated again), e.g. `replace(pool_limit=10)`.

        The environment snapshot is kept unless `env=` is among the changes.
        """
        if "env" not in changes:
            changes["env"] = self.environ
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(ConnectionSettings)}
        fields["env"] = self.environ
        fields.update(changes)
        return ConnectionSettings(**fields)

    def token_source(self) -> TokenSource:
        """A new token source for these credentials (the caller closes it); internal."""
        verify = self.verify if not isinstance(self.verify, ssl.SSLContext) else True
        return resolve_token_source(
            credential=self.credential,
            api_key=self.api_key,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            authority=self.authority,
            verify=verify,
            env=self.environ,
        )
