"""TLS for the emulator: a throwaway certificate authority and a server certificate.

Every call makes a fresh CA (nothing is cached or reused between emulators), issues a
certificate for ``127.0.0.1``, ``::1`` and ``localhost`` signed by it, and returns a server
``SSLContext`` plus the CA certificate in PEM form. Clients trust the emulator by pointing
their CA bundle at that PEM (``connection_verify=path`` for azure-identity and azure-core,
``ssl.create_default_context(cafile=path)`` for aiohttp).
"""

from __future__ import annotations

import os
import pathlib
import ssl

import trustme

__all__ = ["make_server_ssl_context"]

_SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


def make_server_ssl_context(ca_out: pathlib.Path | None) -> tuple[ssl.SSLContext, bytes]:
    """Return ``(server_context, ca_pem)`` for a brand-new CA.

    If ``ca_out`` is given, the CA's PEM is written there (parent directories are created;
    an existing file is replaced atomically so a reader never sees half a certificate).
    """
    ca = trustme.CA(organization_name="agentrun emulator")
    server_cert = ca.issue_cert(*_SERVER_NAMES)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca_pem = bytes(ca.cert_pem.bytes())
    if ca_out is not None:
        _write_atomically(pathlib.Path(ca_out), ca_pem)
    return context, ca_pem


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
