"""The OAuth wiring (``actors/tools/mcp_client/oauth.py``, ``token_store.py``), the ``oauth``
configuration, and ``/oauth/callback``'s parsing: plain data where the code is pure, and
the real ``tests/oauth_server.py`` (the SDK's server-side auth) where it talks HTTP.

Whole flows through the platform are in ``tests/integration/test_oauth.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken

from actors.gateway.oauth_callback import CallbackQuery, PendingAuthorizations, callback_page
from actors.messages import OAuthRecord
from actors.tools.authorization import AuthCommandError, check_owner
from actors.tools.mcp_client import (
    AuthorizationGate,
    AuthorizationRequired,
    AuthorizationStateError,
    MemoryTokenStorage,
    OAuthTiming,
    ServerConfigError,
    StoredTokenStorage,
    callback_result_from_url,
    connect_server,
    oauth_auth,
)
from actors.tools.mcp_client import oauth as oauth_module
from config.errors import ConfigInvalid
from config.schema import (
    ConfigSnapshot,
    PlatformConfig,
    ServerEntry,
    ServerOAuth,
    ServersConfig,
)
from config.store import parse_servers
from tests.integration.test_oauth import OAuthServer

REDIRECT = "http://localhost:8000/oauth/callback"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("oauth", "problem"),
    [
        ({"grant": "client_credentials"}, "needs client_id"),
        ({"grant": "client_credentials", "client_id": "c"}, "needs client_secret"),
        ({"client_secret": "s"}, "client_secret needs client_id"),
        (
            {"client_id": "c", "token_endpoint_auth_method": "client_secret_post"},
            "needs client_secret",
        ),
        ({"private_key": "${PEM}", "client_id": "c"}, "client_credentials' only"),
        (
            {"client_id": "c", "client_secret": "s", "private_key": "k"},
            "client_credentials' only",
        ),
        ({"client_metadata_url": "http://example.com/client.json"}, "https URL with a path"),
        ({"client_metadata_url": "https://example.com/"}, "https URL with a path"),
        ({"scopes": ["read write"]}, "one non-empty word"),
        ({"grant": "password"}, "oauth.grant"),
        ({"clientid": "c"}, "oauth.clientid"),
    ],
)
def test_invalid_oauth_settings_are_refused_naming_the_problem(
    oauth: dict[str, Any], problem: str
) -> None:
    entry = {"url": "https://x.example/mcp", "oauth": oauth}
    text = _json({"mcpServers": {"remote": entry}})
    with pytest.raises(ConfigInvalid) as caught:
        parse_servers(text, "servers_config.json")
    message = str(caught.value)
    assert "mcpServers.remote" in message
    assert problem in message


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def test_oauth_on_stdio_is_refused() -> None:
    with pytest.raises(ConfigInvalid, match="HTTP servers"):
        parse_servers('{"mcpServers": {"s": {"command": "x", "oauth": {}}}}', "servers_config.json")


def test_which_entries_use_oauth() -> None:
    assert ServerEntry(url="https://x/mcp").effective_oauth == ServerOAuth()
    assert ServerEntry.model_validate({"url": "https://x/mcp", "oauth": True}).effective_oauth == (
        ServerOAuth()
    )
    off = ServerEntry.model_validate({"url": "https://x/mcp", "oauth": False})
    assert off.effective_oauth is None
    assert ServerEntry(command="x").effective_oauth is None
    static = ServerEntry(url="https://x/mcp", headers={"Authorization": "Bearer t"})
    assert static.effective_oauth is None
    explicit = ServerEntry.model_validate(
        {"url": "https://x/mcp", "headers": {"authorization": "t"}, "oauth": {}}
    )
    assert explicit.effective_oauth == ServerOAuth()


def test_auth_method_defaults() -> None:
    assert ServerOAuth().effective_auth_method == "none"
    assert ServerOAuth(client_id="c", client_secret="s").effective_auth_method == (
        "client_secret_basic"
    )
    pkjwt = ServerOAuth(grant="client_credentials", client_id="c", private_key="k")
    assert pkjwt.effective_auth_method == "private_key_jwt"


def test_an_unset_secret_variable_names_it() -> None:
    entry = ServerEntry(
        url="https://x.example/mcp",
        oauth=ServerOAuth(client_id="c", client_secret="${NOT_SET_ANYWHERE}"),
    )
    with pytest.raises(ServerConfigError) as caught:
        oauth_auth("remote", entry, MemoryTokenStorage(), platform_env={}, redirect_uri=REDIRECT)
    assert caught.value.variable == "NOT_SET_ANYWHERE"
    assert "oauth.client_secret" in str(caught.value)


# -- the gate, the callback ----------------------------------------------------------------


async def test_the_gate_checks_state_and_is_used_once() -> None:
    seen: list[str] = []

    async def on_url(url: str) -> None:
        seen.append(url)

    gate = AuthorizationGate(on_url)
    with pytest.raises(AuthorizationStateError, match="no authorization is pending"):
        gate.complete(AuthorizationCodeResult(code="c", state="s"))
    await gate.redirect_handler("https://as.example/authorize?client_id=x&state=abc")
    assert seen == ["https://as.example/authorize?client_id=x&state=abc"]
    assert gate.pending_url == seen[0]
    with pytest.raises(AuthorizationStateError, match="does not match"):
        gate.complete(AuthorizationCodeResult(code="c", state="other"))
    waiting = asyncio.ensure_future(gate.callback_handler())
    gate.complete_from_url(f"{REDIRECT}?code=the-code&state=abc&iss=https%3A%2F%2Fas.example")
    assert await waiting == AuthorizationCodeResult(
        code="the-code", state="abc", iss="https://as.example"
    )
    assert gate.pending_url is None
    with pytest.raises(AuthorizationStateError):
        gate.complete(AuthorizationCodeResult(code="c", state="abc"))


async def test_a_refused_authorization_fails_the_waiting_flow() -> None:
    gate = AuthorizationGate()
    await gate.redirect_handler("https://as.example/authorize?state=s1")
    waiting = asyncio.ensure_future(gate.callback_handler())
    gate.refuse("s1", "access_denied: the person said no")
    with pytest.raises(AuthorizationStateError, match="access_denied"):
        await waiting


async def test_the_wait_ends_when_tokens_are_stored_elsewhere() -> None:
    polls: list[bool] = []

    async def stored_elsewhere() -> bool:
        polls.append(True)
        return len(polls) >= 2

    gate = AuthorizationGate(stored_elsewhere=stored_elsewhere, poll_interval=0.01)
    await gate.redirect_handler("https://as.example/authorize?state=s")
    with pytest.raises(AuthorizationStateError, match="stored by another process"):
        await gate.callback_handler()
    assert len(polls) == 2
    assert gate.pending_url is None


def test_redirect_addresses() -> None:
    with pytest.raises(AuthorizationStateError, match="refused: access_denied \\(no\\)"):
        callback_result_from_url(f"{REDIRECT}?error=access_denied&error_description=no&state=s")
    with pytest.raises(AuthorizationStateError, match="no authorization code"):
        callback_result_from_url(f"{REDIRECT}?state=s")
    assert callback_result_from_url("?code=c&state=s").code == "c"

    query = CallbackQuery.parse(
        "/oauth/callback?error=access_denied&error_description=nope&state=s"
    )
    assert query == CallbackQuery(state="s", code=None, iss=None, error="access_denied: nope")
    pending = PendingAuthorizations()
    pending.update("a", "https://as/authorize?state=one")
    pending.update("b", "https://as/authorize?state=two")
    pending.update("a", "https://as/authorize?state=three")  # a new URL replaces the old
    assert pending.take("one") is None
    assert pending.take("three") == ("a", "")
    assert pending.take("three") is None  # once
    pending.update("b", None)
    assert pending.take("two") is None
    # Each owner's own connection has its own pending URL: one does not replace another.
    pending.update("a", "https://as/authorize?state=alice1", owner="alice")
    pending.update("a", "https://as/authorize?state=bob1", owner="bob")
    pending.update("a", "https://as/authorize?state=shared")
    assert pending.take("bob1") == ("a", "bob")
    assert pending.take("alice1") == ("a", "alice")
    assert pending.take("shared") == ("a", "")
    page = callback_page(ok=False, message="<script>x</script>")
    assert b"<script>x" not in page
    assert b"window.close" not in page


def _snapshot(*owners: str) -> ConfigSnapshot:
    defaults = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    defaults["chat"]["websocket"]["auth"]["tokens"] = [
        {"owner": owner, "token_env": f"{owner.upper()}_TOKEN"} for owner in owners
    ]
    servers = ServersConfig.model_validate(
        {
            "mcpServers": {
                "remote": {"url": "http://127.0.0.1:1/mcp"},
                "team": {"url": "http://127.0.0.1:2/mcp", "oauth": {"per_owner": False}},
                "m2m": {
                    "url": "http://127.0.0.1:3/mcp",
                    "oauth": {
                        "grant": "client_credentials",
                        "client_id": "c",
                        "client_secret": "s",
                    },
                },
                "static": {
                    "url": "http://127.0.0.1:4/mcp",
                    "headers": {"Authorization": "Bearer x"},
                },
            }
        }
    )
    here = Path("/nonexistent")
    return ConfigSnapshot(
        config=PlatformConfig.model_validate(defaults),
        servers=servers,
        version=1,
        revision=1,
        config_dir=here,
        defaults_path=here,
        runtime_path=here,
        servers_path=here,
    )


def test_who_signs_in_per_owner_and_which_rows_the_command_may_store() -> None:
    """Per owner: an authorization-code entry (``per_owner`` by default) while WebSocket
    authentication is on; a team account (``per_owner: false``), client credentials and
    a static header are shared. ``mcp-platform auth`` refuses rows nobody would use."""
    owners = _snapshot("alice", "bob")
    assert [owners.oauth_per_owner(s) for s in ("remote", "team", "m2m", "static")] == [
        True,
        False,
        False,
        False,
    ]
    assert not _snapshot().oauth_per_owner("remote")  # no authentication: one connection
    check_owner(owners, "remote", "alice")
    check_owner(owners, "team", "")
    check_owner(_snapshot(), "remote", "")
    with pytest.raises(AuthCommandError, match="--owner \\(alice, bob\\)"):
        check_owner(owners, "remote", "")
    with pytest.raises(AuthCommandError, match="'carol' is not an owner"):
        check_owner(owners, "remote", "carol")
    with pytest.raises(AuthCommandError, match="run without --owner"):
        check_owner(owners, "team", "alice")


# -- storage --------------------------------------------------------------------------------


class Records:
    """The rows, as plain data (the repositories themselves are tested in
    ``tests/test_persistence.py`` on every backend)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], OAuthRecord] = {}

    async def load_oauth(self, server: str, owner: str) -> OAuthRecord:
        return self.rows.get((server, owner), OAuthRecord())

    async def store_oauth_tokens(
        self, server: str, owner: str, tokens: str | None, expires_at: float | None
    ) -> None:
        old = self.rows.get((server, owner), OAuthRecord())
        self.rows[(server, owner)] = old.model_copy(
            update={"tokens": tokens, "expires_at": expires_at}
        )

    async def store_oauth_client(self, server: str, owner: str, client_info: str) -> None:
        old = self.rows.get((server, owner), OAuthRecord())
        self.rows[(server, owner)] = old.model_copy(update={"client_info": client_info})


async def test_stored_storage_round_trip_per_server_and_owner() -> None:
    records = Records()
    one, other = StoredTokenStorage(records, "one"), StoredTokenStorage(records, "other")
    bobs = StoredTokenStorage(records, "one", owner="bob")
    assert await one.get_tokens() is None
    before = time.time()
    await one.set_tokens(OAuthToken(access_token="a", expires_in=100, refresh_token="r"))
    await one.set_client_info(OAuthClientInformationFull(client_id="cid", redirect_uris=None))
    await other.set_tokens(OAuthToken(access_token="b"))
    tokens = await one.get_tokens()
    assert tokens is not None
    assert tokens.refresh_token == "r"
    expires = await one.expires_at()
    assert expires is not None
    assert before + 100 <= expires <= time.time() + 100
    assert await other.expires_at() is None
    assert await bobs.get_tokens() is None  # another owner's row
    await one.forget_tokens()
    assert await one.get_tokens() is None
    info = await one.get_client_info()
    assert info is not None
    assert info.client_id == "cid"  # the registration stays
    assert await other.get_tokens() is not None


# -- against the real authorization server -----------------------------------------------------


@pytest.fixture
def oauth_server(tmp_path: Path) -> Iterator[OAuthServer]:
    server = OAuthServer(tmp_path / "oauth_server.log")
    yield server
    server.stop()


def _headless(gate: AuthorizationGate) -> Any:
    """A redirect handler that "signs in" like the conformance client: GET, no redirects."""

    async def redirect(url: str) -> None:
        await gate.redirect_handler(url)
        async with httpx2.AsyncClient() as browser:
            response = await browser.get(url)
        gate.complete_from_url(response.headers["location"])

    return redirect


async def _connect_and_echo(entry: ServerEntry, auth: Any, interactive: Any = "connect") -> str:
    async with connect_server(
        "remote",
        entry,
        platform_env=os.environ,
        connection_timeout=20,
        cwd_default=Path.cwd(),
        auth=auth,
        interactive=interactive,
    ) as conn:
        result = await conn.call_tool("echo", {"text": "hi"}, timeout=20)
        return result.text


async def test_the_legacy_sse_transport_authorizes_too(tmp_path: Path) -> None:
    server = OAuthServer(tmp_path / "oauth_sse.log", sse=True)
    try:
        entry = ServerEntry(url=server.url, transport="sse")
        gate = AuthorizationGate()
        auth = oauth_auth(
            "remote",
            entry,
            MemoryTokenStorage(),
            platform_env={},
            redirect_uri=REDIRECT,
            redirect_handler=_headless(gate),
            callback_handler=gate.callback_handler,
        )
        assert await _connect_and_echo(entry, auth) == "echo: hi"
        stats = await server.stats()
        assert stats["authorizations"] == 1
        assert stats["unauthorized"] >= 1
    finally:
        server.stop()


async def test_never_interactive_connect_needs_authorization(oauth_server: OAuthServer) -> None:
    entry = ServerEntry(url=oauth_server.url)
    gate = AuthorizationGate()
    auth = oauth_auth(
        "remote",
        entry,
        MemoryTokenStorage(),
        platform_env={},
        redirect_uri=REDIRECT,
        redirect_handler=_headless(gate),
        callback_handler=gate.callback_handler,
    )
    with pytest.raises(AuthorizationRequired) as caught:
        await _connect_and_echo(entry, auth, interactive="never")
    assert caught.value.failure == "auth_required"
    assert (await oauth_server.stats()).get("authorizations", 0) == 0


async def test_stored_tokens_are_used_and_a_due_one_refreshed_once_after_jitter(
    oauth_server: OAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first client authorizes and stores tokens; a second one (a restart) uses them
    without asking; a third, loaded when the stored token is due, refreshes once, after a
    random delay drawn from [0, restart_jitter]."""
    entry = ServerEntry(url=oauth_server.url)
    records = Records()

    def client(jitter: float = 0.0) -> Any:
        gate = AuthorizationGate()
        return oauth_auth(
            "remote",
            entry,
            StoredTokenStorage(records, "remote"),
            platform_env={},
            redirect_uri=REDIRECT,
            redirect_handler=_headless(gate),
            callback_handler=gate.callback_handler,
            timing=OAuthTiming(refresh_margin=60, restart_jitter=jitter),
        )

    await oauth_server.ttl(100)  # due at once with a 60 s margin? no: at most half, 50 s
    assert await _connect_and_echo(entry, client()) == "echo: hi"
    assert await _connect_and_echo(entry, client()) == "echo: hi"
    stats = await oauth_server.stats()
    assert stats["authorizations"] == 1
    assert stats.get("refresh_requests", 0) == 0

    # The stored token's expiry moves into the margin: the next load finds it due.
    row = records.rows[("remote", "")]
    records.rows[("remote", "")] = row.model_copy(update={"expires_at": time.time() + 10})
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return 0.0

    monkeypatch.setattr(oauth_module.random, "uniform", uniform)
    assert await _connect_and_echo(entry, client(jitter=7.0)) == "echo: hi"
    assert (0, 7.0) in draws
    stats = await oauth_server.stats()
    assert stats["refresh_requests"] == 1
    assert stats["refreshes"] == 1
    assert stats["authorizations"] == 1
