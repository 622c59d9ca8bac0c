"""Shared test configuration: anyio tests run on asyncio (aiohttp is asyncio-only)."""

from __future__ import annotations

import sys

import pytest

# CPython 3.10's asyncio.sslproto does not mark a TLS transport closed when its peer drops the
# connection after the handshake (`SSLProtocol.connection_lost` sets `_app_transport._closed`
# only for a failed handshake; 3.11's rewritten sslproto always sets it), so such a transport
# warns "unclosed transport" when it is collected although nothing holds it open. Only that
# warning is ignored, and only on 3.10 (as a mark: marks take precedence over `-W error`); the
# 3.11+ runs still fail on any transport agentrun leaves open.
_PY310_SSL_CLOSE = pytest.mark.filterwarnings(
    "ignore:unclosed transport <asyncio.sslproto._SSLProtocolTransport:ResourceWarning"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if sys.version_info < (3, 11):
        for item in items:
            item.add_marker(_PY310_SSL_CLOSE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
