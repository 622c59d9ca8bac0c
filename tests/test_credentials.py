"""Credential resolution: the order design.md gives, each branch, and the error messages.

Every call passes `env=` explicitly, so the machine's real environment never leaks in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from azure.identity.aio import ClientSecretCredential

from agentrun import ConfigurationError
from agentrun._auth import CredentialTokenSource, StaticTokenSource, TokenSource
from agentrun._credentials import default_api_base, resolve_token_source

SP_ENV = {
    "AZURE_TENANT_ID": "env-tenant",
    "AZURE_CLIENT_ID": "env-client",
    "AZURE_CLIENT_SECRET": "env-secret-value",
}


class StubCredential:
    """Any object with get_token_info counts as an azure-identity async credential."""

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise AssertionError("a borrowed credential must not be closed")


class RecordingCredential(ClientSecretCredential):
    """The real aio ClientSecretCredential, remembering the arguments it was built with."""

    built: ClassVar[list[tuple[tuple[Any, ...], dict[str, Any]]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        RecordingCredential.built.append((args, kwargs))
        super().__init__(*args, **kwargs)


@pytest.fixture(autouse=True)
def record_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    import azure.identity.aio

    RecordingCredential.built = []
    monkeypatch.setattr(azure.identity.aio, "ClientSecretCredential", RecordingCredential)
    return RecordingCredential.built


def _built_with() -> tuple[tuple[Any, ...], dict[str, Any]]:
    assert len(RecordingCredential.built) == 1
    return RecordingCredential.built[0]


async def _static_token(source: TokenSource) -> str:
    assert isinstance(source, StaticTokenSource)
    return (await source.fetch()).token


def _credential_of(source: TokenSource) -> Any:
    assert isinstance(source, CredentialTokenSource)
    return source.credential


@pytest.mark.anyio
async def test_explicit_credential_wins_and_is_not_owned() -> None:
    """An explicit credential beats every other argument and env var; we do not close it."""
    cred = StubCredential()
    source = resolve_token_source(
        credential=cred,
        api_key="key",
        tenant_id="t",
        client_id="c",
        client_secret="s",
        env={**SP_ENV, "AZURE_AD_TOKEN": "envtok"},
    )
    assert _credential_of(source) is cred
    await source.aclose()  # StubCredential.close would raise if called


@pytest.mark.anyio
async def test_api_key_beats_service_principal_and_env() -> None:
    """An explicit api_key (static AD token) comes before any service principal."""
    source = resolve_token_source(
        api_key="  key-123 ",
        tenant_id="t",
        client_id="c",
        client_secret="s",
        env={**SP_ENV, "AZURE_AD_TOKEN": "envtok"},
    )
    assert await _static_token(source) == "key-123"


def test_empty_api_key_rejected() -> None:
    """An empty api_key is a configuration error, not a silent fall-through."""
    with pytest.raises(ConfigurationError, match="api_key is empty"):
        resolve_token_source(api_key=" ", env={})


@pytest.mark.anyio
async def test_explicit_service_principal_builds_owned_credential() -> None:
    """tenant_id/client_id/client_secret build a ClientSecretCredential we own and close, with
    the explicit authority and CA bundle; explicit args beat the env service principal."""
    source = resolve_token_source(
        tenant_id="tenant1",
        client_id="client1",
        client_secret="s3cret",
        authority="https://login.example.test",
        verify="/path/to/ca.pem",
        env=SP_ENV,
    )
    assert isinstance(_credential_of(source), ClientSecretCredential)
    args, kwargs = _built_with()
    assert args == ("tenant1", "client1", "s3cret")
    assert kwargs == {
        "authority": "https://login.example.test",
        "connection_verify": "/path/to/ca.pem",
    }
    assert "s3cret" not in repr(source)
    assert source._owns_credential  # type: ignore[attr-defined]
    await source.aclose()


@pytest.mark.anyio
async def test_authority_from_env_and_verify_false() -> None:
    """Without an explicit authority, AZURE_AUTHORITY_HOST from `env` is used; verify=False
    turns TLS verification off for the credential."""
    source = resolve_token_source(
        tenant_id="tenant1",
        client_id="client1",
        client_secret="s3cret",
        verify=False,
        env={"AZURE_AUTHORITY_HOST": "https://authority.example.test"},
    )
    assert isinstance(_credential_of(source), ClientSecretCredential)
    _, kwargs = _built_with()
    assert kwargs == {"authority": "https://authority.example.test", "connection_verify": False}
    await source.aclose()


@pytest.mark.anyio
async def test_default_authority_when_env_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """With `env` lacking AZURE_AUTHORITY_HOST, the public cloud is used even if os.environ
    says otherwise (env isolation)."""
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://leaked.example.test")
    source = resolve_token_source(tenant_id="t1", client_id="c1", client_secret="s", env={})
    assert isinstance(_credential_of(source), ClientSecretCredential)
    _, kwargs = _built_with()
    assert kwargs == {"authority": "login.microsoftonline.com"}  # verify=True: system trust
    await source.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("var", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
async def test_ca_bundle_from_env_reaches_the_credential(var: str) -> None:
    """With verify=True, a CA bundle named by SSL_CERT_FILE or REQUESTS_CA_BUNDLE is passed to
    the credential explicitly (its aiohttp transport would otherwise ignore a late setting)."""
    source = resolve_token_source(
        tenant_id="t1", client_id="c1", client_secret="s", env={var: "/etc/ca/bundle.pem"}
    )
    _, kwargs = _built_with()
    assert kwargs["connection_verify"] == "/etc/ca/bundle.pem"
    await source.aclose()


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"client_id": "c"}, "tenant_id, client_secret"),
        ({"tenant_id": "t", "client_id": "c"}, "client_secret"),
        ({"client_secret": "zzz-secret"}, "tenant_id, client_id"),
        ({"tenant_id": "t", "client_secret": "zzz-secret"}, "client_id"),
    ],
)
def test_partial_explicit_service_principal(kwargs: dict[str, str], missing: str) -> None:
    """Partial service-principal arguments name what is missing (and never echo a secret),
    even when the environment has a complete service principal."""
    with pytest.raises(ConfigurationError, match="incomplete service principal") as info:
        resolve_token_source(env=SP_ENV, **kwargs)
    assert f"but not {missing}" in str(info.value)
    assert "zzz-secret" not in str(info.value)


@pytest.mark.anyio
async def test_env_service_principal_beats_env_token() -> None:
    """AZURE_TENANT_ID/CLIENT_ID/CLIENT_SECRET in env come before AZURE_AD_TOKEN."""
    source = resolve_token_source(env={**SP_ENV, "AZURE_AD_TOKEN": "envtok"})
    assert isinstance(_credential_of(source), ClientSecretCredential)
    args, _ = _built_with()
    assert args == ("env-tenant", "env-client", "env-secret-value")
    await source.aclose()


@pytest.mark.anyio
async def test_env_ad_token_last() -> None:
    """AZURE_AD_TOKEN is used when nothing more specific exists."""
    assert await _static_token(resolve_token_source(env={"AZURE_AD_TOKEN": "envtok"})) == "envtok"


@pytest.mark.anyio
async def test_partial_env_service_principal_falls_through_to_token() -> None:
    """An incomplete env service principal (AZURE_CLIENT_ID alone is common: managed identity)
    is not an error when AZURE_AD_TOKEN is there."""
    source = resolve_token_source(env={"AZURE_CLIENT_ID": "c", "AZURE_AD_TOKEN": "envtok"})
    assert await _static_token(source) == "envtok"


def test_nothing_found_says_what_to_set() -> None:
    """With no credential anywhere, the error lists every argument and env var to set."""
    with pytest.raises(ConfigurationError) as info:
        resolve_token_source(env={})
    message = str(info.value)
    for name in (
        "credential=",
        "api_key=",
        "tenant_id=",
        "client_id=",
        "client_secret=",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_AD_TOKEN",
    ):
        assert name in message


def test_nothing_found_mentions_partial_env() -> None:
    """A partial env service principal is pointed out (names only, never values)."""
    with pytest.raises(ConfigurationError) as info:
        resolve_token_source(env={"AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "zzz-secret"})
    message = str(info.value)
    assert "has AZURE_CLIENT_ID, AZURE_CLIENT_SECRET but not AZURE_TENANT_ID" in message
    assert "zzz-secret" not in message


def test_invalid_authority_is_configuration_error() -> None:
    """azure-identity's refusal of a non-https authority becomes ConfigurationError."""
    with pytest.raises(ConfigurationError, match="invalid service principal settings"):
        resolve_token_source(
            tenant_id="t", client_id="c", client_secret="s", authority="http://x", env={}
        )


def test_default_api_base() -> None:
    """AZURE_AI_API_BASE gives the default base URL; unset or blank gives None."""
    assert default_api_base({"AZURE_AI_API_BASE": "https://x/api/projects/p"}) == (
        "https://x/api/projects/p"
    )
    assert default_api_base({"AZURE_AI_API_BASE": "  "}) is None
    assert default_api_base({}) is None


@pytest.mark.parametrize(
    "base",
    [
        "https://user:S3CRET-VALUE@x.example/api/projects/p",
        "https://x.example/api/projects/p?sig=S3CRET-VALUE",
        "https://x.example/api/projects/p#S3CRET-VALUE",
    ],
)
def test_api_base_with_a_secret_in_it_is_refused_without_echoing_it(base: str) -> None:
    """An api_base carrying user:password, a query or a fragment is refused, and the error
    never repeats the secret part (it could land in a log)."""
    from agentrun import ConfigurationError, ConnectionSettings

    with pytest.raises(ConfigurationError) as info:
        ConnectionSettings(api_base=base, api_key="k")
    assert "S3CRET-VALUE" not in str(info.value)
