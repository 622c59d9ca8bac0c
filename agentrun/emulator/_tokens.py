"""An Entra-style (Azure AD v2.0) token endpoint for the emulator, and the bearer check.

Routes (added to the emulator's app by :meth:`TokenIssuer.add_routes`):

* ``POST /{tenant}/oauth2/v2.0/token`` -- the OAuth 2.0 client-credentials grant, as
  ``azure-identity``'s ``ClientSecretCredential`` (aio and sync/MSAL) sends it: a form with
  ``client_id``, ``client_secret``, ``grant_type=client_credentials`` and ``scope``. Errors
  copy Entra's shape (``error``, ``error_description`` starting with the ``AADSTS`` code,
  ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``, ``error_uri``) and its
  statuses:

  * tenant not the configured one: 400 ``invalid_request`` (AADSTS90002)
  * ``grant_type`` missing: 400 ``invalid_request`` (AADSTS900144)
  * ``grant_type`` other than ``client_credentials``: 400 ``unsupported_grant_type``
    (AADSTS70003)
  * ``client_id`` missing: 400 ``invalid_request`` (AADSTS900144)
  * unknown ``client_id``: 400 ``unauthorized_client`` (AADSTS700016)
  * ``client_secret`` missing: 401 ``invalid_client`` (AADSTS7000218)
  * wrong ``client_secret``: 401 ``invalid_client`` (AADSTS7000215)
  * ``scope`` missing: 400 ``invalid_request`` (AADSTS900144)
  * a scope without the ``/.default`` suffix: 400 ``invalid_scope`` (AADSTS1002012)

  Success: ``{"token_type": "Bearer", "expires_in": N, "ext_expires_in": N,
  "access_token": "..."}`` where ``N`` is the lifetime rounded down to whole seconds (so a
  client never believes a token lives longer than the emulator honours it), plus
  ``refresh_in = N // 2`` when ``N >= 7200``, as Entra does.
* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``GET /{tenant}/.well-known/openid-configuration`` -- the OpenID Connect metadata that MSAL
  (the sync credentials) reads before its first token request. Every URL in it is built from
  the emulator's own base URL, so MSAL then posts to the emulator's token endpoint.

Tokens are opaque random strings (not JWTs: nothing may parse them). The issuer remembers
each one with its expiry; memory stays bounded because expired tokens are dropped as new
ones are issued, and at most ``max_tokens`` live tokens are kept (the oldest go first).

``tenant_id=None`` accepts any tenant in the path.
"""

from __future__ import annotations

import collections
import datetime
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

__all__ = ["TOKEN_ROUTE", "TokenIssuer"]

TOKEN_ROUTE = "/{tenant}/oauth2/v2.0/token"
"""The token route's path template, as used in stats keys and ``FaultRule.route``."""

_OIDC_ROUTES = (
    "/{tenant}/v2.0/.well-known/openid-configuration",
    "/{tenant}/.well-known/openid-configuration",
)
_DEFAULT_SUFFIX = "/.default"
_MAX_TOKENS_DEFAULT = 200_000


class TokenIssuer:
    """Issues opaque bearer tokens for one client id/secret and checks ``Authorization`` headers.

    Thread-safe: the counters and the token table sit behind a lock, so ``check_bearer`` and
    ``reset`` may be called from any thread while the server loop issues tokens.
    """

    def __init__(
        self,
        *,
        tenant_id: str | None,
        client_id: str,
        client_secret: str,
        lifetime: float,
        api_keys: Sequence[str],
        clock: Callable[[], float] = time.time,
        max_tokens: int = _MAX_TOKENS_DEFAULT,
    ) -> None:
        if lifetime <= 0:
            raise ValueError(f"token lifetime must be positive, got {lifetime!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens!r}")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime = float(lifetime)
        self.api_keys: frozenset[str] = frozenset(k for k in api_keys if k)
        self.max_tokens = max_tokens
        self._clock = clock
        self._lock = threading.Lock()
        # token -> expiry (clock time). The lifetime is fixed, so insertion order is expiry
        # order and expired tokens are always at the front.
        self._tokens: collections.OrderedDict[str, float] = collections.OrderedDict()
        self.tokens_issued = 0

    # ------------------------------------------------------------------ public API

    def add_routes(self, app: web.Application, base_url: Callable[[], str]) -> None:
        """Add the token and OpenID metadata routes to ``app``.

        ``base_url()`` returns the emulator's scheme, host and port (``https://127.0.0.1:PORT``)
        and is called per request, so it may be bound before the port is known.
        """

        async def token(request: web.Request) -> web.Response:
            return await self._handle_token(request)

        async def openid_configuration(request: web.Request) -> web.Response:
            return self._handle_openid(request, base_url().rstrip("/"))

        app.router.add_post(TOKEN_ROUTE, token)
        for path in _OIDC_ROUTES:
            app.router.add_get(path, openid_configuration)

    def check_bearer(self, authorization_header: str | None) -> bool:
        """True if the header is ``Bearer <token>`` with an unexpired token this issuer
        issued or one of the static API keys. The scheme is case-insensitive."""
        if not authorization_header:
            return False
        scheme, _, credential = authorization_header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return False
        if credential in self.api_keys:
            return True
        with self._lock:
            expiry = self._tokens.get(credential)
            if expiry is None:
                return False
            if self._clock() >= expiry:
                del self._tokens[credential]
                return False
            return True

    def issue(self) -> tuple[str, float]:
        """Mint a token directly (no HTTP): returns ``(token, expires_at)`` in clock time."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._drop_expired(now)
            while len(self._tokens) >= self.max_tokens:
                self._tokens.popitem(last=False)
            expires_at = now + self.lifetime
            self._tokens[token] = expires_at
            self.tokens_issued += 1
        return token, expires_at

    def reset(self) -> None:
        """Zero ``tokens_issued``.

        Tokens already issued stay valid until they expire: credentials cache their tokens
        (azure-identity for up to the whole lifetime), so revoking them on reset would make
        every long-lived client in a test session fail with 401 after the first reset.
        """
        with self._lock:
            self.tokens_issued = 0
            self._drop_expired(self._clock())

    @property
    def active_tokens(self) -> int:
        """How many issued tokens are remembered and not yet expired."""
        with self._lock:
            self._drop_expired(self._clock())
            return len(self._tokens)

    # ------------------------------------------------------------------ internals

    def _drop_expired(self, now: float) -> None:
        tokens = self._tokens
        while tokens:
            first = next(iter(tokens))
            if tokens[first] > now:
                break
            del tokens[first]

    def _tenant_ok(self, tenant: str) -> bool:
        return self.tenant_id is None or tenant.lower() == self.tenant_id.lower()

    async def _handle_token(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if not self._tenant_ok(tenant):
            return _tenant_not_found(tenant)
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            for key, value in (await request.post()).items():
                if isinstance(value, str):
                    form[key] = value
        grant_type = form.get("grant_type", "")
        if not grant_type:
            return _missing_parameter("grant_type")
        if grant_type != "client_credentials":
            return _entra_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            return _missing_parameter("client_id")
        if client_id != self.client_id:
            return _entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You "
                "may have sent your authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret")
        if not secret:
            return _entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
            return _entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID, for a secret added to "
                f"app '{client_id}'.",
            )
        scope = form.get("scope", "").strip()
        if not scope:
            return _missing_parameter("scope")
        for item in scope.split():
            if not item.endswith(_DEFAULT_SUFFIX):
                return _entra_error(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {item} is not valid. Client credential "
                    "flows must have a scope value with /.default suffixed to the resource "
                    "identifier (application ID URI).",
                )
        token, _ = self.issue()
        seconds = int(self.lifetime)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": seconds,
            "ext_expires_in": seconds,
            "access_token": token,
        }
        if seconds >= 7200:
            body["refresh_in"] = seconds // 2
        return web.json_response(body, headers=_NO_STORE)

    def _handle_openid(self, request: web.Request, base: str) -> web.Response:
        tenant = request.match_info["tenant"]
        if not self._tenant_ok(tenant):
            return _tenant_not_found(tenant)
        root = f"{base}/{tenant}"
        document = {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{root}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{base}/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
            "tenant_region_scope": None,
            "cloud_instance_name": "emulator",
            "cloud_graph_host_name": "emulator",
            "msgraph_host": "emulator",
            "rbac_url": base,
        }
        return web.json_response(document)


_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _entra_error(status: int, error: str, code: int, description: str) -> web.Response:
    trace_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    timestamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {description} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return web.json_response(body, status=status, headers=_NO_STORE)


def _missing_parameter(name: str) -> web.Response:
    return _entra_error(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _tenant_not_found(tenant: str) -> web.Response:
    return _entra_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud.",
    )
