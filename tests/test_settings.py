"""ConnectionSettings: a validated, hashable value; the clients built from it; run options."""

from __future__ import annotations

import inspect
import pickle
import typing
from collections.abc import AsyncIterator

import pytest

import agentrun
from agentrun import AsyncClient, Client, ConfigurationError, ConnectionSettings
from agentrun._openai import aclose_clients, get_client
from agentrun._retry import RetryPolicy
from agentrun.emulator import Emulator, EmulatorSettings, Timing

FAST = Timing(queue_delay=0.01, run_duration=0.03, delta_interval=0.001)
BASE = "https://res.services.ai.azure.com/api/projects/p"


def test_equal_settings_are_one_key_and_secrets_are_hidden() -> None:
    """Settings made from equal values are equal and hash alike (one cache key); a different
    secret makes different settings; no secret appears in the repr."""
    a = ConnectionSettings(api_base=BASE + "/", api_key="tok-1", env={})
    b = ConnectionSettings(api_base=BASE, api_key="tok-1", env={})
    c = ConnectionSettings(api_base=BASE, api_key="tok-2", env={})
    assert a == b and hash(a) == hash(b) and a.api_base == BASE
    assert a != c
    assert len({a, b, c}) == 2
    sp = ConnectionSettings(
        api_base=BASE, tenant_id="t", client_id="c", client_secret="hush-hush", env={}
    )
    for value in (a, sp):
        assert "tok-1" not in repr(value) and "hush-hush" not in repr(value)
    assert "tenant_id='t'" in repr(sp)


def test_settings_capture_the_environment_once() -> None:
    """api_base and credentials left out come from the env given (a snapshot); a different
    environment makes different settings, and the secret variables stay out of the repr."""
    env = {"AZURE_AI_API_BASE": BASE, "AZURE_AD_TOKEN": "env-secret"}
    a = ConnectionSettings(env=env)
    env["AZURE_AD_TOKEN"] = "another"
    b = ConnectionSettings(env=env)
    assert a.api_base == BASE and a.environ["AZURE_AD_TOKEN"] == "env-secret"
    assert a != b
    assert "env-secret" not in repr(a)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_base": "http://service.example/api", "api_key": "k"}, "clear text"),
        ({"api_key": "k"}, "no api_base"),
        ({"api_base": BASE}, "no credentials"),
        ({"api_base": BASE, "tenant_id": "t"}, "incomplete service principal"),
        ({"api_base": BASE, "api_key": "k", "pool_limit": 0}, "pool_limit"),
        ({"api_base": BASE, "api_key": "k", "verify": 3}, "verify must be"),
        ({"api_base": BASE, "api_key": "k", "api_version": ""}, "api_version"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, object], message: str) -> None:
    """Each bad or missing value is refused when the settings are made, with a clear message."""
    with pytest.raises(ConfigurationError, match=message):
        ConnectionSettings(env={}, **kwargs)  # type: ignore[arg-type]


def test_insecure_http_allowed_explicitly_or_by_env() -> None:
    """http:// off the loopback is accepted with allow_insecure_http=True or the env switch."""
    url = "http://service.example/api"
    assert ConnectionSettings(api_base=url, api_key="k", allow_insecure_http=True, env={})
    allowed = ConnectionSettings(
        api_base=url, api_key="k", env={"AGENTRUN_ALLOW_INSECURE_HTTP": "1"}
    )
    assert allowed.api_base == url


def test_replace_validates_again_and_keeps_the_environment() -> None:
    """replace() gives a new value with the change, the same env snapshot, and validates."""
    base = ConnectionSettings(env={"AZURE_AI_API_BASE": BASE, "AZURE_AD_TOKEN": "t"})
    smaller = base.replace(pool_limit=5)
    assert smaller.pool_limit == 5 and smaller.environ == base.environ and smaller != base
    with pytest.raises(ConfigurationError):
        base.replace(pool_limit=0)


def test_settings_pickle_round_trip() -> None:
    """Settings of plain values survive pickling (Ray ships them to actors) and stay equal."""
    value = ConnectionSettings(
        api_base=BASE, api_key="k", retry_policy=RetryPolicy(max_attempts=2), env={}
    )
    assert pickle.loads(pickle.dumps(value)) == value


def test_verify_true_honours_the_ca_bundle_variables() -> None:
    """verify=True means the bundle named by SSL_CERT_FILE, else REQUESTS_CA_BUNDLE, for the
    service connection too (as for acompletion and the token endpoint); else system trust."""
    s = ConnectionSettings(api_base=BASE, api_key="k", env={"REQUESTS_CA_BUNDLE": "/ca.pem"})
    assert s.service_verify == "/ca.pem"
    both = {"REQUESTS_CA_BUNDLE": "/r.pem", "SSL_CERT_FILE": "/s.pem"}
    assert ConnectionSettings(api_base=BASE, api_key="k", env=both).service_verify == "/s.pem"
    assert ConnectionSettings(api_base=BASE, api_key="k", env={}).service_verify is True
    off = ConnectionSettings(api_base=BASE, api_key="k", verify=False, env=both)
    assert off.service_verify is False


def test_run_options_type_matches_run_signature() -> None:
    """RunOptions (the type of stream/Client.run/Client.stream options) names exactly the
    keyword arguments of AsyncClient.run, so the options are typed in one place."""
    params = inspect.signature(AsyncClient.run).parameters
    keyword = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(typing.get_type_hints(agentrun.RunOptions)) == keyword


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(timing=FAST)) as e:
        yield e


@pytest.mark.anyio
async def test_async_client_takes_settings(emu: Emulator) -> None:
    """AsyncClient(settings=...) runs against that endpoint and exposes the value; the old
    keyword arguments build an equal value; both at once are refused."""
    settings = ConnectionSettings(api_base=emu.endpoint, api_key=emu.api_key)
    async with AsyncClient(settings=settings, mode="poll") as client:
        result = await client.run("asst_abc123", "What is 2 + 3?")
        assert "5" in result.text
        assert client.settings is settings
    async with AsyncClient(emu.endpoint, api_key=emu.api_key) as same:
        assert same.settings == settings
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncClient(settings=settings, pool_limit=5)


@pytest.mark.anyio
async def test_registry_shares_one_client_per_settings(emu: Emulator) -> None:
    """The module-level registry gives one client for equal settings (however given) and
    another for different ones."""
    try:
        one = get_client(api_base=emu.endpoint, api_key=emu.api_key)
        again = get_client(settings=ConnectionSettings(api_base=emu.endpoint, api_key=emu.api_key))
        other = get_client(api_base=emu.endpoint, api_key=emu.api_key, max_retries=0)
        assert one is again
        assert other is not one and other.settings.retry_policy.max_attempts == 1
    finally:
        await aclose_clients()


def test_sync_client_takes_settings() -> None:
    """Client(settings=...) runs a prompt through the same value."""
    with Emulator(EmulatorSettings(timing=FAST)).in_thread() as emu:
        settings = ConnectionSettings(api_base=emu.endpoint, api_key=emu.api_key)
        with Client(settings=settings) as client:
            assert client.settings is settings
            assert "5" in client.run("asst_abc123", "What is 2 + 3?", mode="poll").text


@pytest.mark.anyio
async def test_async_client_trusts_requests_ca_bundle_for_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AsyncClient(verify=True) trusts the CA named by REQUESTS_CA_BUNDLE for the service, as
    acompletion does: a run on the TLS emulator succeeds; without the variable the same
    client fails certificate verification."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    async with Emulator(EmulatorSettings(timing=FAST), tls=True) as emu:
        assert emu.ca_path is not None
        env = {"REQUESTS_CA_BUNDLE": str(emu.ca_path)}
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, env=env) as client:
            result = await client.run("asst_abc123", "What is 2 + 3?", timeout=60)
        assert "5" in result.text
        async with AsyncClient(emu.endpoint, api_key=emu.api_key, env={}) as untrusting:
            with pytest.raises(agentrun.APIConnectionError, match="certificate"):
                await untrusting.run("asst_abc123", "What is 2 + 3?", timeout=60)
