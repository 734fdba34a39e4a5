"""An OAuth-protected MCP server with its own authorization server (a test server).

A real server: the SDK's ``MCPServer`` with the SDK's server-side auth
(``auth_server_provider``: the authorization server's routes, ``/authorize``,
``/token``, ``/register``, its metadata, and the protected-resource metadata of ``/mcp``),
served by uvicorn on 127.0.0.1. The authorization server approves at once: ``/authorize``
redirects straight back to the client's ``redirect_uri`` with a code, as if a person had
signed in as ``alice`` (or whoever ``/test/subject`` names) and clicked "Allow" (a
browser test follows that redirect for real).

It counts what a test needs to prove (``GET /test/stats``): token requests by grant type,
refreshes, authorizations, registrations, ``/mcp`` requests answered 401, tool runs, and
the access tokens seen on ``/mcp`` (their number only, never their values).

Control routes::

    POST /test/ttl?seconds=N   lifetime of the next access tokens issued (default 3600)
    POST /test/revoke          revoke every refresh token (and access token) issued so far
    (tool ``admin_echo`` answers 403 insufficient_scope to a token without ``admin``)
    POST /test/subject?name=S  the person who signs in from now on (default ``alice``)
    GET  /test/subjects        ``echo`` runs by the subject of the token that called it,
                               and the subject of each live refresh token's count
    POST /test/lenient         from now on let ``initialize``, notifications and the GET
                               stream through without a token (a token is needed from
                               ``tools/list`` on, as some servers do)
    GET  /test/stats           the counters above

Refresh tokens rotate: each refresh issues a new one and forgets the old, so a refresh
token sent twice is refused (``invalid_grant``), as a strict provider does.

Run it: ``python tests/oauth_server.py PORT`` (``PORT sse``: the legacy SSE transport
at ``/sse`` instead of Streamable HTTP at ``/mcp``).
"""

from __future__ import annotations

import secrets
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import orjson
import uvicorn
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COUNTS: Counter[str] = Counter()
PROVIDERS: list[AutoApprovingProvider] = []
"""The one provider this process serves (for the middleware's scope check)."""
SETTINGS: dict[str, Any] = {"ttl": 3600, "lenient": False, "subject": "alice"}
ECHO_BY_SUBJECT: Counter[str] = Counter()
LENIENT_TOKEN = "lenient-" + secrets.token_urlsafe(16)
"""What the middleware puts on the requests it lets through without a token."""
SEEN_TOKENS: set[str] = set()


class AutoApprovingProvider:
    """An in-memory authorization server that approves every request as ``alice``."""

    def __init__(self) -> None:
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        COUNTS["registrations"] += 1
        assert client_info.client_id is not None
        # Every client may later ask for more (a scope step-up to "admin").
        client_info.scope = "mcp admin"
        self.clients[client_info.client_id] = client_info

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        COUNTS["authorizations"] += 1
        code = secrets.token_urlsafe(24)
        assert client.client_id is not None
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=SETTINGS["subject"],
        )
        query = {"code": code}
        if params.state is not None:
            query["state"] = params.state
        return f"{params.redirect_uri}?{urlencode(query)}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        return self.codes.get(authorization_code)

    def _issue(
        self, client_id: str, scopes: list[str], resource: str | None, subject: str | None
    ) -> OAuthToken:
        ttl = int(SETTINGS["ttl"])
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = AccessToken(
            token=access,
            client_id=client_id,
            scopes=scopes,
            expires_at=int(time.time()) + ttl,
            resource=resource,
            subject=subject,
        )
        self.refresh_tokens[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject=subject
        )
        return OAuthToken(
            access_token=access,
            expires_in=ttl,
            refresh_token=refresh,
            scope=" ".join(scopes) or None,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        COUNTS["token_authorization_code"] += 1
        self.codes.pop(authorization_code.code, None)
        return self._issue(
            authorization_code.client_id,
            authorization_code.scopes,
            authorization_code.resource,
            authorization_code.subject,
        )

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        COUNTS["refresh_requests"] += 1
        token = self.refresh_tokens.get(refresh_token)
        if token is None:
            COUNTS["refresh_refused"] += 1
        return token

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        if self.refresh_tokens.pop(refresh_token.token, None) is None:
            COUNTS["refresh_refused"] += 1
            raise TokenError("invalid_grant", "refresh token already used")
        COUNTS["refreshes"] += 1
        return self._issue(
            refresh_token.client_id, scopes or refresh_token.scopes, None, refresh_token.subject
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        if token == LENIENT_TOKEN:
            return AccessToken(token=token, client_id="lenient", scopes=["mcp"])
        access = self.access_tokens.get(token)
        if access is None or (access.expires_at is not None and access.expires_at < time.time()):
            return None
        SEEN_TOKENS.add(token)
        return access

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        self.refresh_tokens.pop(token.token, None)
        self.access_tokens.pop(token.token, None)

    def revoke_all(self) -> None:
        self.refresh_tokens.clear()
        self.access_tokens.clear()


def build(port: int, endpoint: str = "/mcp") -> tuple[MCPServer, AutoApprovingProvider]:
    """The server on ``http://127.0.0.1:PORT`` (issuer = that origin, resource = the
    MCP endpoint)."""
    base = f"http://127.0.0.1:{port}"
    provider = AutoApprovingProvider()
    PROVIDERS.append(provider)
    mcp = MCPServer(
        "protected",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=base,
            resource_server_url=f"{base}{endpoint}",
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=["mcp", "admin"], default_scopes=["mcp"]
            ),
            required_scopes=["mcp"],
            validate_token_resource=False,
        ),
    )

    @mcp.tool()
    async def echo(text: str) -> str:
        """Return ``text``."""
        COUNTS["echo"] += 1
        access = get_access_token()
        ECHO_BY_SUBJECT[(access.subject if access else None) or "?"] += 1
        return f"echo: {text}"

    @mcp.tool()
    async def admin_echo(text: str) -> str:
        """Return ``text``; needs the ``admin`` scope (a step-up)."""
        COUNTS["admin_echo"] += 1
        return f"admin echo: {text}"

    @mcp.resource("memo://whoami")
    async def whoami() -> str:
        """Who the token that reads it belongs to."""
        access = get_access_token()
        return f"you are {(access.subject if access else None) or 'nobody'}"

    @mcp.custom_route("/test/ttl", methods=["POST"])
    async def set_ttl(request: Request) -> Response:
        SETTINGS["ttl"] = int(request.query_params["seconds"])
        return JSONResponse({})

    @mcp.custom_route("/test/revoke", methods=["POST"])
    async def revoke(request: Request) -> Response:
        provider.revoke_all()
        return JSONResponse({})

    @mcp.custom_route("/test/subject", methods=["POST"])
    async def set_subject(request: Request) -> Response:
        SETTINGS["subject"] = request.query_params["name"]
        return JSONResponse({})

    @mcp.custom_route("/test/subjects", methods=["GET"])
    async def subjects(request: Request) -> Response:
        live = Counter(t.subject or "?" for t in provider.refresh_tokens.values())
        return JSONResponse({"echo": dict(ECHO_BY_SUBJECT), "refresh_tokens": dict(live)})

    @mcp.custom_route("/test/lenient", methods=["POST"])
    async def lenient(request: Request) -> Response:
        SETTINGS["lenient"] = True
        return JSONResponse({})

    @mcp.custom_route("/test/stats", methods=["GET"])
    async def stats(request: Request) -> Response:
        return JSONResponse({**COUNTS, "distinct_tokens": len(SEEN_TOKENS)})

    return mcp, provider


class _CountUnauthorized:
    """ASGI middleware: counts ``/mcp`` requests answered 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in ("/mcp", "/sse", "/messages/"):
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                COUNTS["unauthorized"] += 1
            await send(message)

        headers = dict(scope["headers"])
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        try:
            request = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            request = {}
        method = request.get("method", "") if isinstance(request, dict) else ""
        if (
            SETTINGS["lenient"]
            and b"authorization" not in headers
            and (
                scope["method"] == "GET"
                or method == "initialize"
                or method.startswith("notifications/")
            )
        ):
            scope = dict(scope)
            token = f"Bearer {LENIENT_TOKEN}".encode()
            scope["headers"] = [*scope["headers"], (b"authorization", token)]
        if method == "tools/call" and request.get("params", {}).get("name") == "admin_echo":
            bearer = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
            access = PROVIDERS[0].access_tokens.get(bearer) if PROVIDERS else None
            if access is not None and "admin" not in access.scopes:
                COUNTS["step_up_challenges"] += 1
                base = f"http://127.0.0.1:{scope['server'][1]}"
                challenge = (
                    'Bearer error="insufficient_scope", scope="mcp admin", '
                    f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
                )
                await JSONResponse(
                    {"error": "insufficient_scope"},
                    status_code=403,
                    headers={"WWW-Authenticate": challenge},
                )(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, counting_send)


def main() -> None:
    """Serve on 127.0.0.1:PORT."""
    port = int(sys.argv[1])
    sse = sys.argv[2:] == ["sse"]
    mcp, _ = build(port, "/sse" if sse else "/mcp")
    app = _CountUnauthorized(mcp.sse_app() if sse else mcp.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
