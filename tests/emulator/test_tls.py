"""The emulator's throwaway CA and server certificate (agentrun.emulator._tls)."""

from __future__ import annotations

import pathlib
import ssl
from typing import Any

import aiohttp
import pytest

from agentrun.emulator._tls import make_server_ssl_context

TokenServer = Any  # conftest.TokenServer


def test_ca_pem_written_with_parent_dirs(tmp_path: pathlib.Path) -> None:
    """The CA PEM is returned, and written to ca_out when given (parent dirs created)."""
    target = tmp_path / "a" / "b" / "ca.pem"
    context, pem = make_server_ssl_context(target)
    assert isinstance(context, ssl.SSLContext)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert target.read_bytes() == pem
    # A client context can load it as a trust anchor.
    ssl.create_default_context(cadata=pem.decode())


def test_every_call_makes_a_new_ca(tmp_path: pathlib.Path) -> None:
    """Two emulators never share a CA; with no ca_out nothing is written."""
    _, first = make_server_ssl_context(None)
    _, second = make_server_ssl_context(None)
    assert first != second
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_certificate_verifies_for_loopback_names(
    token_server: TokenServer, host: str
) -> None:
    """A client trusting only the CA verifies the server for both 127.0.0.1 and localhost
    (hostname checking on)."""
    assert token_server.ca_path is not None
    client_context = ssl.create_default_context(cafile=str(token_server.ca_path))
    assert client_context.check_hostname
    url = f"https://{host}:{token_server.port}/x/v2.0/.well-known/openid-configuration"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=client_context) as resp:
        assert resp.status in (200, 400)  # reached the handler over verified TLS


@pytest.mark.anyio
async def test_untrusted_without_the_ca(token_server: TokenServer) -> None:
    """A client with the default trust store rejects the emulator: the CA is private."""
    url = f"{token_server.url}/x/v2.0/.well-known/openid-configuration"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with session.get(url, ssl=ssl.create_default_context()):
                pass
