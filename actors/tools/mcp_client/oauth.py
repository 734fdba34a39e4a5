"""OAuth 2.1 for HTTP MCP servers: the one place that turns a server entry into an
``httpx2.Auth`` (the ToolActor, ``mcp-platform auth`` and the conformance client share it).

Design note
-----------
*The SDK does the protocol.* Discovery (protected-resource metadata from the
``WWW-Authenticate`` header, then the well-known paths; authorization-server metadata by
RFC 8414 and OpenID discovery, with the 2025-03-26 fallbacks), client registration (a
pre-registered client, a Client ID Metadata Document URL, dynamic registration), PKCE
S256, the ``resource`` parameter, scope selection and step-up, the token endpoint auth
methods and client credentials (secret or private-key JWT) are
``mcp.client.auth.OAuthClientProvider`` and its client-credentials subclasses. This
module only configures them and adds four things a long-running host needs, as small
overrides of the SDK's hooks (``_initialize``, ``_handle_token_response``,
``_handle_refresh_response``, the context's ``update_token_expiry`` and
``is_token_valid``):

1. *Refresh before expiry.* The SDK refreshes only once a token has expired; here a token
   counts as due ``refresh_margin`` seconds before (plus up to 10 % at random per server,
   and never more than half its lifetime), so a request never goes out with a token about
   to die. The refresh happens lazily, on the next request.
2. *One refresh in flight.* The SDK's flow holds a lock around a refresh, so concurrent
   requests wait for it and then use the new tokens (a rotated refresh token is replaced
   in memory and in storage before anyone else runs). The SDK also holds that lock while
   *every* request waits for its response headers, which would serialise tool calls:
   :class:`PlatformOAuth` sends a request whose token is good without the lock and hands
   only the rest (no token yet, token due, a 401/403 challenge) to the SDK's flow. A 401
   to a token we believed good tries a refresh first, not a new authorization.
3. *Tokens survive restarts.* Storage keeps each token's wall-clock expiry; a restarted
   platform uses a stored token as long as it is good (no refresh at start), and one that
   is due is refreshed on first use after a random delay of up to ``restart_jitter``
   seconds, so twenty servers do not refresh at the same instant.
4. *A person only where one can answer.* The authorization-code flow needs someone to
   open a URL. :class:`PlatformOAuth` lets that happen only while ``interactive`` (for the
   ToolActor: the connect and its first listings, whose owner can wait; deadlines and
   timeouts are held meanwhile, see ``on_waiting``); a request made later (a tool call
   whose refresh token was revoked) fails with :class:`AuthorizationRequired` carrying
   the provider's reason, the connection drops, and the reconnect asks the person. A
   refused refresh token is forgotten at once, so it is never sent twice.

:class:`AuthorizationGate` is the rendezvous between the flow and whoever receives the
redirect (the gateway's ``/oauth/callback``, the CLI): it checks ``state`` (one use) and
hands the code to the waiting flow.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import httpx2
import orjson
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthTokenError, TokenStorage
from mcp.client.auth.oauth2 import OAuthContext
from mcp.client.auth.utils import extract_field_from_www_auth
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import AnyUrl

from actors.tools.mcp_client.environment import expand_env_references
from actors.tools.mcp_client.errors import AuthorizationRequired, ServerConfigError
from config.schema import ServerEntry

__all__ = [
    "AuthorizationGate",
    "AuthorizationRequired",
    "AuthorizationStateError",
    "ExpiringTokenStorage",
    "OAuthTiming",
    "PlatformOAuth",
    "callback_result_from_url",
    "oauth_auth",
]

RedirectHandler = Callable[[str], Awaitable[None]]
CallbackHandler = Callable[[], Awaitable[AuthorizationCodeResult]]


@runtime_checkable
class ExpiringTokenStorage(TokenStorage, Protocol):
    """A ``TokenStorage`` that also knows when its token expires and can forget it
    (``token_store.py``); a plain SDK storage works too, without those two benefits."""

    async def expires_at(self) -> float | None:
        """Wall-clock expiry of the stored access token."""
        ...

    async def forget_tokens(self) -> None:
        """Drop the stored tokens (not the client registration)."""
        ...


@dataclass(frozen=True, slots=True)
class OAuthTiming:
    """When tokens are refreshed (``mcp.oauth`` in ``config.yaml``)."""

    refresh_margin: float = 60.0
    """Seconds before expiry at which a token is refreshed on its next use."""
    restart_jitter: float = 5.0
    """Upper bound of the random delay before refreshing a token loaded from storage."""


@dataclass
class _DueEarlyContext(OAuthContext):
    """The SDK's context, with "valid" meaning "not due for a refresh yet"."""

    refresh_margin: float = 60.0

    def update_token_expiry(self, token: OAuthToken) -> None:
        if token.expires_in is None:
            self.token_expiry_time = None
            return
        self.token_expiry_time = time.time() + _usable_for(
            int(token.expires_in), self.refresh_margin
        )


_LONG_AGO = 1.0
"""An expiry in the past that marks a token due (the SDK reads ``0`` as "never expires")."""


def _usable_for(lifetime: float, margin: float) -> float:
    """Seconds of a ``lifetime``-second token before it is due: the margin, but never more
    than half the lifetime (a 60 s token with a 60 s margin would be refreshed forever)."""
    return lifetime - min(margin, lifetime / 2)


class _Hooks(OAuthClientProvider):
    """The SDK's authorization-code provider with the platform's hooks (module note)."""

    _platform: PlatformOAuth
    _preregistered: OAuthClientInformationFull | None = None
    _loaded_once = False

    def _install(self, owner: PlatformOAuth, margin: float) -> None:
        old = self.context
        values = {f.name: getattr(old, f.name) for f in fields(old) if f.init}
        self.context = _DueEarlyContext(**values, refresh_margin=margin)
        self._platform = owner

    async def _initialize(self) -> None:
        await super()._initialize()
        if self._preregistered is not None:
            self.context.client_info = self._preregistered
        tokens = self.context.current_tokens
        storage = self.context.storage
        self.context.token_expiry_time = None
        if tokens is not None and isinstance(storage, ExpiringTokenStorage):
            expires_at = await storage.expires_at()
            if expires_at is not None:
                lifetime = float(tokens.expires_in or 0)
                margin = (
                    self.context.refresh_margin
                    if isinstance(self.context, _DueEarlyContext)
                    else 0.0
                )
                self.context.token_expiry_time = (
                    expires_at - lifetime + _usable_for(lifetime, margin)
                )
        first, self._loaded_once = not self._loaded_once, True
        if first and not self.context.is_token_valid() and self.context.can_refresh_token():
            # Lazily, with jitter: a restart with many stale tokens spreads its refreshes.
            await asyncio.sleep(random.uniform(0, self._platform.timing.restart_jitter))  # noqa: S311 - jitter, not crypto

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        if response.status_code != 200:
            reason = await _provider_reason(response)
            self._platform.last_failure = f"the token refresh was refused ({reason})"
            storage = self.context.storage
            if isinstance(storage, ExpiringTokenStorage):
                await storage.forget_tokens()  # never send a refused refresh token again
        ok = await super()._handle_refresh_response(response)
        if ok:
            self._platform.last_failure = None
            self._platform.refreshed()
        return ok

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        try:
            await super()._handle_token_response(response)
        except OAuthTokenError as exc:
            self._platform.exchange_done(str(exc))
            raise
        self._platform.last_failure = None
        self._platform.exchange_done(None)


async def _provider_reason(response: httpx2.Response) -> str:
    """``error: error_description`` from a token endpoint's error body (or the status)."""
    try:
        body = orjson.loads(await response.aread())
    except (orjson.JSONDecodeError, httpx2.HTTPError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        text = body["error"] + (f": {description}" if isinstance(description, str) else "")
        return f"HTTP {response.status_code}, {text[:300]}"
    return f"HTTP {response.status_code}"


def _challenge_scope(www_authenticate: str) -> str | None:
    """The ``scope`` of a ``WWW-Authenticate`` challenge (for the person's message)."""
    response = httpx2.Response(403, headers={"WWW-Authenticate": www_authenticate})
    return extract_field_from_www_auth(response, "scope")


def _challenged(response: httpx2.Response) -> bool:
    """Whether the server asks for (more) authorization."""
    if response.status_code == 401:
        return True
    return (
        response.status_code == 403
        and extract_field_from_www_auth(response, "error") == "insufficient_scope"
    )


class PlatformOAuth(httpx2.Auth):
    """The ``httpx2.Auth`` of one server: the SDK's provider behind a lock-free fast path.

    Built by :func:`oauth_auth`. Attributes the connection code sets:

    * ``interactive``: a person may be asked now (``connect_server``'s ``interactive``;
      the ToolActor closes the window after its first listings).
    * ``on_waiting``: called with ``True`` when the flow starts waiting for a person and
      ``False`` when it stops (the connect lifts its deadline, a connection holds its
      listing timeouts meanwhile).

    Counters and hooks for the owner: ``last_failure`` (why authorization is needed,
    e.g. the provider's reason for refusing a refresh), :meth:`exchange_waiter`.
    """

    requires_response_body = False

    def __init__(
        self,
        server: str,
        timing: OAuthTiming,
        redirect_handler: RedirectHandler | None,
        callback_handler: CallbackHandler | None,
    ) -> None:
        self.server = server
        self.timing = timing
        self.interactive = False
        self.on_waiting: Callable[[bool], None] | None = None
        self.last_failure: str | None = None
        self.refresh_count = 0
        self._redirect = redirect_handler
        self._callback = callback_handler
        self._exchange_waiters: list[asyncio.Future[str | None]] = []
        self._step_up: str | None = None
        """The ``WWW-Authenticate`` of a 403 insufficient_scope the running flow got."""
        self._pending_step_up: str | None = None
        """One that could not be granted then (no person): replayed at the next connect."""
        self._provider: _Hooks | None = None

    def _attach(self, provider: _Hooks) -> None:
        self._provider = provider

    @property
    def provider(self) -> OAuthClientProvider:
        """The SDK provider underneath."""
        assert self._provider is not None
        return self._provider

    # -- what the SDK's flow calls --------------------------------------------------------

    async def redirect_handler(self, url: str) -> None:
        """The SDK wants a person to open ``url``."""
        if not self.interactive or self._redirect is None:
            if self._step_up is not None:
                # A scope step-up: asked for again on the next connect (see async_auth_flow).
                self._pending_step_up = self._step_up
                scope = _challenge_scope(self._step_up)
                self.last_failure = "the server asks for more permissions" + (
                    f" (scope {scope})" if scope else ""
                )
            reason = self.last_failure or "the server asks for authorization"
            raise AuthorizationRequired(
                f"server {self.server!r} needs authorization: {reason}",
                server=self.server,
                reason=reason,
            )
        self._waiting(person=True)
        await self._redirect(url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        """Wait for the redirect back (the person signed in)."""
        assert self._callback is not None
        try:
            return await self._callback()
        except BaseException:
            # No code came: the next flow reloads the tokens from storage (another process,
            # `mcp-platform auth`, may have stored some meanwhile).
            if self._provider is not None:
                self._provider._initialized = False
            raise
        finally:
            self._waiting(person=False)

    def _waiting(self, *, person: bool) -> None:
        if self.on_waiting is not None:
            self.on_waiting(person)

    def refreshed(self) -> None:
        """A refresh succeeded."""
        self.refresh_count += 1

    def exchange_done(self, error: str | None) -> None:
        """A token request of the full flow ended (``error`` is ``None`` on success)."""
        waiters, self._exchange_waiters = self._exchange_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(error)

    def exchange_waiter(self) -> asyncio.Future[str | None]:
        """A future of the next token exchange's end: ``None`` when tokens were stored,
        else why it failed (take it before handing over the code)."""
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._exchange_waiters.append(waiter)
        return waiter

    # -- httpx2.Auth -------------------------------------------------------------------------

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        provider = self._provider
        assert provider is not None
        context = provider.context
        tokens = context.current_tokens
        # A 403 insufficient_scope to hand to the SDK's flow as the answer to ``request``
        # (it then steps up): the one just received, or one a call met when no person
        # could be asked, replayed on the first request once one can (the reconnect).
        replay: httpx2.Response | None = None
        if self.interactive and self._pending_step_up is not None:
            replay = httpx2.Response(
                403, headers={"WWW-Authenticate": self._pending_step_up}, request=request
            )
            self._pending_step_up = None
        elif provider._initialized and tokens is not None and context.is_token_valid():
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
            response = yield request
            if not _challenged(response):
                return
            if response.status_code == 403:
                replay = response
            elif context.current_tokens is tokens and context.can_refresh_token():
                # Refused a token we believed good (revoked, clock skew): refresh first,
                # the SDK would go straight to a new authorization.
                context.token_expiry_time = _LONG_AGO
            del request.headers["Authorization"]
        flow = provider.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                if replay is not None and outgoing is request:
                    response, replay = replay, None
                else:
                    response = yield outgoing
                if outgoing is request and response.status_code == 403 and _challenged(response):
                    # Read by redirect_handler if no person can be asked now.
                    self._step_up = response.headers.get("WWW-Authenticate")
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            self._step_up = None
            await flow.aclose()


class AuthorizationStateError(OAuthFlowError):
    """A redirect back whose ``state`` is not the one pending (unknown, or used), an error
    redirect, or a wait for a person that ended otherwise (tokens stored elsewhere)."""


class AuthorizationGate:
    """Where the authorization URL goes out and the redirect back comes in.

    Args:
        on_url: Awaited with each authorization URL (publish it, print it).
        stored_elsewhere: Polled every ``poll_interval`` seconds while a person is waited
            for: ``True`` when tokens appeared in storage meanwhile (``mcp-platform auth``
            ran in a terminal); the wait then ends with :class:`AuthorizationStateError`
            and the next connect uses them.
        poll_interval: Seconds between two polls.
    """

    def __init__(
        self,
        on_url: Callable[[str], Awaitable[None]] | None = None,
        *,
        stored_elsewhere: Callable[[], Awaitable[bool]] | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        self._on_url = on_url
        self._stored_elsewhere = stored_elsewhere
        self._poll_interval = poll_interval
        self._state: str | None = None
        self._url: str | None = None
        self._answer: asyncio.Future[AuthorizationCodeResult] | None = None

    @property
    def pending_url(self) -> str | None:
        """The authorization URL waiting for a person, if any."""
        return self._url

    async def redirect_handler(self, url: str) -> None:
        """The flow's ``redirect_handler``: remember the URL's ``state``, announce it."""
        state = parse_qs(urlsplit(url).query).get("state", [None])[0]
        self._state, self._url = state, url
        self._answer = asyncio.get_running_loop().create_future()
        if self._on_url is not None:
            await self._on_url(url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        """The flow's ``callback_handler``: wait for :meth:`complete`."""
        answer = self._answer
        assert answer is not None, "callback_handler before redirect_handler"
        try:
            if self._stored_elsewhere is None:
                return await answer
            while True:
                done, _ = await asyncio.wait({answer}, timeout=self._poll_interval)
                if done:
                    return answer.result()
                if await self._stored_elsewhere():
                    raise AuthorizationStateError(
                        "tokens were stored by another process meanwhile (mcp-platform auth)"
                    )
        finally:
            self._state = self._url = self._answer = None

    def complete(self, result: AuthorizationCodeResult) -> None:
        """Hand the redirect's code to the waiting flow (once).

        Raises:
            AuthorizationStateError: Nothing is pending, or ``state`` is not its state.
        """
        expected, answer = self._state, self._answer
        if expected is None or answer is None or answer.done():
            raise AuthorizationStateError("no authorization is pending (or it was used)")
        if result.state is None or not secrets.compare_digest(result.state, expected):
            raise AuthorizationStateError("the state does not match the pending authorization")
        self._state = None  # one use
        answer.set_result(result)

    def refuse(self, state: str, reason: str) -> None:
        """The authorization server sent the person back with an error: the waiting flow
        fails with ``reason`` (a new connect asks again).

        Raises:
            AuthorizationStateError: Nothing is pending, or ``state`` is not its state.
        """
        expected, answer = self._state, self._answer
        if expected is None or answer is None or answer.done():
            raise AuthorizationStateError("no authorization is pending (or it was used)")
        if not secrets.compare_digest(state, expected):
            raise AuthorizationStateError("the state does not match the pending authorization")
        self._state = None
        answer.set_exception(AuthorizationStateError(reason))

    def complete_from_url(self, redirect_url: str) -> None:
        """:meth:`complete` with the parameters of the URL the browser was sent back to.

        Raises:
            AuthorizationStateError: See :meth:`complete`; also an error redirect.
        """
        self.complete(callback_result_from_url(redirect_url))


def callback_result_from_url(redirect_url: str) -> AuthorizationCodeResult:
    """The code, state and issuer of a redirect back (a URL or just its query).

    Raises:
        AuthorizationStateError: The redirect carries an error, or no code.
    """
    query = urlsplit(redirect_url).query if "://" in redirect_url else redirect_url.lstrip("?")
    params = {key: values[0] for key, values in parse_qs(query).items()}
    if "error" in params:
        description = params.get("error_description", "")
        raise AuthorizationStateError(
            f"the authorization server refused: {params['error']}"
            + (f" ({description})" if description else "")
        )
    if "code" not in params:
        raise AuthorizationStateError("the redirect carries no authorization code")
    return AuthorizationCodeResult(
        code=params["code"], state=params.get("state"), iss=params.get("iss")
    )


def oauth_auth(
    name: str,
    entry: ServerEntry,
    storage: TokenStorage,
    *,
    platform_env: Mapping[str, str],
    redirect_uri: str,
    redirect_handler: RedirectHandler | None = None,
    callback_handler: CallbackHandler | None = None,
    timing: OAuthTiming | None = None,
) -> PlatformOAuth | None:
    """The ``httpx2.Auth`` for one server entry, or ``None`` if it does not use OAuth.

    Args:
        name: The server's name (for messages).
        entry: Its ``servers_config.json`` entry (``entry.effective_oauth``).
        storage: Where its tokens live (``SqliteTokenStorage``, ``MemoryTokenStorage``).
        platform_env: For ``${VAR}`` references in ``client_secret`` and ``private_key``.
        redirect_uri: Where the browser comes back to (``oauth.redirect_uri`` wins).
        redirect_handler: Awaited with the authorization URL (authorization code only).
        callback_handler: Awaited for the redirect's code and state.
        timing: Refresh margin and restart jitter.

    Raises:
        ServerConfigError: A ``${VAR}`` the settings reference is not set.
    """
    settings = entry.effective_oauth
    if settings is None:
        return None
    assert entry.url is not None  # effective_oauth is None for stdio
    timing = timing or OAuthTiming()
    auth = PlatformOAuth(name, timing, redirect_handler, callback_handler)

    def secret(value: str | None, field: str) -> str | None:
        if value is None:
            return None
        try:
            return expand_env_references(value, platform_env, field=f"oauth.{field}")
        except ServerConfigError as exc:
            raise ServerConfigError(
                f"server {name!r}: {exc}", server=name, variable=exc.variable
            ) from None

    client_secret = secret(settings.client_secret, "client_secret")
    scope = " ".join(settings.scopes) if settings.scopes else None
    method = settings.effective_auth_method
    # The jitter of the margin: servers authorized together do not come due together.
    margin = timing.refresh_margin * (1 + random.uniform(0, 0.1))  # noqa: S311 - jitter
    provider: _Hooks
    if settings.grant == "client_credentials":
        # Only for this grant: the SDK's client-credentials module brings PyJWT (~30 ms).
        from actors.tools.mcp_client.oauth_grants import (
            ClientCredentials,
            PrivateKeyJWT,
            SignedJWTParameters,
        )

        assert settings.client_id is not None  # the schema guarantees it
        if method == "private_key_jwt":
            key = secret(settings.private_key, "private_key")
            assert key is not None
            assertion = SignedJWTParameters(
                issuer=settings.client_id,
                subject=settings.client_id,
                signing_key=key,
                signing_algorithm=settings.signing_algorithm,
            ).create_assertion_provider()
            with _issuer_optional(settings.issuer):
                provider = PrivateKeyJWT(
                    entry.url,
                    storage,
                    settings.client_id,
                    assertion,
                    scope=scope,
                    issuer=settings.issuer,
                )
        else:
            assert client_secret is not None
            assert method in ("client_secret_basic", "client_secret_post")
            with _issuer_optional(settings.issuer):
                provider = ClientCredentials(
                    entry.url,
                    storage,
                    settings.client_id,
                    client_secret,
                    token_endpoint_auth_method=method,
                    scope=scope,
                    issuer=settings.issuer,
                )
    else:
        redirect = AnyUrl(settings.redirect_uri or redirect_uri)
        metadata = OAuthClientMetadata(
            redirect_uris=[redirect],
            client_name=settings.client_name,
            scope=scope,
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method=None if settings.client_id is None else _sdk_method(method),
        )
        provider = _Hooks(
            entry.url,
            metadata,
            storage,
            redirect_handler=auth.redirect_handler,
            callback_handler=auth.callback_handler,
            client_metadata_url=settings.client_metadata_url,
        )
        if settings.client_id is not None:
            provider._preregistered = OAuthClientInformationFull(
                client_id=settings.client_id,
                client_secret=client_secret,
                redirect_uris=[redirect],
                token_endpoint_auth_method=_sdk_method(method),
                grant_types=["authorization_code", "refresh_token"],
                scope=scope,
            )
    provider._install(auth, margin)
    auth._attach(provider)
    return auth


@contextmanager
def _issuer_optional(issuer: str | None) -> Iterator[None]:
    """Without ``oauth.issuer`` the SDK warns (it will require one in 3.0); here that is a
    documented choice (docs/servers.md, OAuth servers: the authorization server the MCP
    server names is used), so the warning is not repeated at every connect."""
    with warnings.catch_warnings():
        if issuer is None:
            warnings.simplefilter("ignore", MCPDeprecationWarning)
        yield


def _sdk_method(method: str) -> Any:
    """A configured token endpoint auth method as the SDK's models type it."""
    return method
