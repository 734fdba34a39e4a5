"""OAuth servers through the real platform: the real ``mcp-platform`` process, a real
WebSocket client, the scripted LLM, and ``tests/oauth_server.py`` (a real MCP server
behind a real authorization server, built with the SDK's server-side auth, counting every
token request).

The "browser" here is an HTTP client that opens the authorization URL from the
``server_status`` frame and follows the redirects (the authorization server approves at
once) back to the platform's ``/oauth/callback``; ``tests/browser/test_oauth_page.py``
clicks the page's Connect button in Chromium instead.

Proves: a server that answers 401 becomes ``auth_required`` with an authorization URL;
the callback finishes the exchange (state checked, one use) and the tools appear without a
restart; a token due soon is refreshed before it expires, once, while ten calls wait for
it; a revoked refresh token sends the server back to ``auth_required`` with the
provider's reason while the chat goes on, and a new sign-in brings it back; a restart
uses the stored tokens without refreshing or asking; ``mcp-platform auth`` (a pasted
redirect address while the platform runs, or the redirect taken directly while it is
down) stores tokens the platform then uses, a waiting server without a restart; no
token, code or secret reaches the log or a frame. With WebSocket authentication on, two
owners sign in for themselves: each one's calls reach the server with their own token
(the authorization server counts them by subject), each one's tabs see their own state,
the rows are per owner, a logout forgets one owner's, and an idle owner's connection
closes and reopens with the stored tokens.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx2
import orjson
import pytest

from tests import postgres as pg
from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import ENTRY_POINT
from tests.scripted_llm import Done, Finish, Gate, Reply, ToolCall, ToolCallDelta
from tests.test_mcp_client import HTTPServerProcess, free_port

OAUTH_SERVER = Path(__file__).resolve().parents[1] / "oauth_server.py"


class OAuthServer(HTTPServerProcess):
    """``tests/oauth_server.py`` on a free port."""

    def __init__(self, log: Path, *, sse: bool = False) -> None:
        port = free_port()
        self.sse = sse
        super().__init__([str(OAUTH_SERVER), str(port), *(["sse"] if sse else [])], port, log)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/sse" if self.sse else f"{self.base}/mcp"

    async def _control(self, method: str, path: str, **params: str) -> dict[str, Any]:
        async with httpx2.AsyncClient(base_url=self.base) as http:
            response = await http.request(method, path, params=params)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body

    async def ttl(self, seconds: int) -> None:
        """The lifetime of the access tokens issued from now on."""
        await self._control("POST", "/test/ttl", seconds=str(seconds))

    async def revoke(self) -> None:
        """Revoke every token issued so far."""
        await self._control("POST", "/test/revoke")

    async def lenient(self) -> None:
        """Let ``initialize`` through without a token; ask for one from ``tools/list`` on."""
        await self._control("POST", "/test/lenient")

    async def stats(self) -> dict[str, int]:
        return await self._control("GET", "/test/stats")

    async def subject(self, name: str) -> None:
        """Who signs in at the authorization server from now on."""
        await self._control("POST", "/test/subject", name=name)

    async def subjects(self) -> dict[str, dict[str, int]]:
        """``echo`` runs and live refresh tokens, by the subject of their token."""
        return await self._control("GET", "/test/subjects")


@pytest.fixture
async def oauth_server(tmp_path: Path) -> AsyncIterator[OAuthServer]:
    server = OAuthServer(tmp_path / "oauth_server.log")
    yield server
    server.stop()


def _write_servers(platform: ChatPlatform, server: OAuthServer) -> None:
    servers = {
        "mcpServers": {"remote": {"url": server.url}},
        "settings": {"maxParallelCalls": 10},
    }
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))


def _overrides(port: int) -> dict[str, Any]:
    return {
        "chat": {"websocket": {"host": "127.0.0.1", "port": port}},
        "mcp": {
            "connection": {"initial_reconnect_delay": 0.1},
            "oauth": {"restart_jitter": 0},
        },
    }


async def _start(platform: ChatPlatform, server: OAuthServer, port: int) -> None:
    _write_servers(platform, server)
    await platform.start(_overrides(port))


async def _status(client: ChatClient, status: str, timeout: float = 20) -> dict[str, Any]:
    """The next ``server_status`` frame of ``remote`` with ``status``."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.expect("server_status", timeout=timeout)
            if frame["server"] == "remote" and frame["status"] == status:
                return frame


async def _auth_required(platform: ChatPlatform) -> tuple[ChatClient, str]:
    """A client, once ``remote`` waits for a person, and the authorization URL."""
    await platform.process.wait_for(
        "tools.authorization_required", lambda e: e["server"] == "remote", timeout=30
    )
    client = await platform.connect()
    info = await client.expect("session_info")
    [remote] = [s for s in info["servers"] if s["name"] == "remote"]
    assert remote["status"] == "auth_required"
    assert remote["auth_url"].startswith("http://127.0.0.1:")
    return client, remote["auth_url"]


async def _sign_in(auth_url: str) -> httpx2.Response:
    """What a browser does: open the URL, follow the redirects to ``/oauth/callback``."""
    async with httpx2.AsyncClient(follow_redirects=True, timeout=60) as browser:
        return await browser.get(auth_url)


def _echo_calls(*texts: str) -> Reply:
    return Reply.tool_calls(
        [ToolCall("remote__echo", orjson.dumps({"text": t}).decode(), id=t) for t in texts]
    )


def _stored_secrets(db: Path) -> list[str]:
    """Every token and client secret in the token table."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tokens, client_info FROM oauth_tokens").fetchall()
    secrets: list[str] = []
    for tokens, client in rows:
        if tokens:
            parsed = orjson.loads(tokens)
            secrets += [parsed["access_token"], parsed.get("refresh_token") or ""]
        if client:
            secrets.append(orjson.loads(client).get("client_secret") or "")
    return [s for s in secrets if s]


def _assert_secrets_absent(platform: ChatPlatform, clients: list[ChatClient], db: Path) -> None:
    secrets = _stored_secrets(db)
    assert secrets  # the tokens are stored, so the check below means something
    log = "".join(platform.process.raw_lines)
    frames = orjson.dumps([c.frames for c in clients]).decode()
    for secret in secrets:
        assert secret not in log
        assert secret not in frames


async def test_connect_from_the_frame_then_refresh_once_for_ten_calls(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    platform, clients = chat
    await oauth_server.ttl(2)  # the first token is due for a refresh after 1 s
    await _start(platform, oauth_server, free_port())
    client, auth_url = await _auth_required(platform)
    clients.append(client)

    page = await _sign_in(auth_url)
    assert page.status_code == 200
    assert "data-ok=true" in page.text
    assert "window.close" in page.text
    await _status(client, "ready")
    assert await oauth_server.stats() == {
        "unauthorized": 1,
        "registrations": 1,
        "authorizations": 1,
        "token_authorization_code": 1,
        "distinct_tokens": 1,
    }

    # The state was used: the same redirect again is refused, nothing is exchanged.
    assert page.url.path == "/oauth/callback"
    async with httpx2.AsyncClient() as browser:
        replay = await browser.get(page.url)
    assert replay.status_code == 400
    assert "not pending" in replay.text

    await oauth_server.ttl(3600)
    await asyncio.sleep(1.2)  # time itself is what this test is about: the token comes due
    texts = [f"call-{i}" for i in range(10)]
    llm.script(_echo_calls(*texts), Reply.text("All echoed."))
    frames = await client.turn("echo ten things")
    ended = {f["call_id"]: f["status"] for f in frames if f["type"] == "tool_execution"}
    assert ended == dict.fromkeys(texts, "completed")
    stats = await oauth_server.stats()
    assert stats["refresh_requests"] == 1  # one refresh for ten concurrent calls
    assert stats["refreshes"] == 1
    assert stats["unauthorized"] == 1  # refreshed before expiry: no call was refused
    assert stats["echo"] == 10
    assert stats["authorizations"] == 1
    assert stats["token_authorization_code"] == 1

    _assert_secrets_absent(platform, clients, platform.config_dir / "data" / "chat_history.db")
    code = parse_qs(page.url.query.decode())["code"][0]  # the authorization code, too
    assert code not in "".join(platform.process.raw_lines)
    assert code not in orjson.dumps(client.frames).decode()


async def test_a_server_that_wants_a_token_only_from_tools_list_on(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """``initialize`` passes without a token; the first listing gets the 401: the person is
    asked then (the listing waits for them, past its own timeout), and the server is
    ready once they signed in."""
    platform, clients = chat
    await oauth_server.lenient()
    overrides = _overrides(free_port())
    overrides["mcp"]["connection"]["connection_timeout"] = 2  # the person takes longer
    _write_servers(platform, oauth_server)
    await platform.start(overrides)
    client, auth_url = await _auth_required(platform)
    clients.append(client)
    await asyncio.sleep(2.5)  # past the listing's timeout: it must still be waiting
    assert (await _sign_in(auth_url)).status_code == 200
    await _status(client, "ready")
    llm.script(_echo_calls("listed"), Reply.text("Done."))
    frames = await client.turn("echo")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    # The SDK's server binds a session to the principal that opened it, so the listing
    # retried with the new token is refused once ("Session not found") and the owner
    # reconnects on a new session, with the stored token: the person is asked once.
    stats = await oauth_server.stats()
    assert stats["authorizations"] == 1
    assert stats["token_authorization_code"] == 1


async def test_revoked_refresh_token_asks_again_and_the_chat_goes_on(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    platform, clients = chat
    await _start(platform, oauth_server, free_port())
    client, auth_url = await _auth_required(platform)
    clients.append(client)
    assert (await _sign_in(auth_url)).status_code == 200
    await _status(client, "ready")

    await oauth_server.revoke()
    llm.script(_echo_calls("after-revoke"), Reply.text("The tool failed; carrying on."))
    frames = await client.turn("echo after revoke")
    [failed] = [f for f in frames if f["type"] == "tool_execution" and f["status"] == "failed"]
    assert failed["call_id"] == "after-revoke"
    assert frames[-1]["type"] == "assistant_message"
    assert frames[-1]["message"] == "The tool failed; carrying on."

    again = await _status(client, "auth_required")
    assert "invalid_grant" in again["error_message"]
    assert again["auth_url"] != auth_url
    stats = await oauth_server.stats()
    assert stats["refresh_refused"] == 1  # the revoked refresh token was sent once, never again

    llm.script(Reply.text("Still chatting."))
    frames = await client.turn("are you there?")
    assert frames[-1]["message"] == "Still chatting."

    assert (await _sign_in(again["auth_url"])).status_code == 200
    await _status(client, "ready")
    llm.script(_echo_calls("back"), Reply.text("Back."))
    frames = await client.turn("echo once more")
    assert {f["status"] for f in frames if f["type"] == "tool_execution"} >= {"completed"}
    assert (await oauth_server.stats())["refresh_refused"] == 1


async def test_a_scope_step_up_asks_the_person_on_the_reconnect(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """A tool call gets 403 insufficient_scope: no person can be asked in the middle of a
    turn, so the call fails (the turn goes on) and the server waits for a person with the
    larger scope; once they signed in, the call works."""
    platform, clients = chat
    await _start(platform, oauth_server, free_port())
    client, auth_url = await _auth_required(platform)
    clients.append(client)
    assert (await _sign_in(auth_url)).status_code == 200
    await _status(client, "ready")

    call = Reply.tool_calls([ToolCall("remote__admin_echo", '{"text": "root"}', id="adm")])
    llm.script(call, Reply.text("That needs more permissions."))
    frames = await client.turn("admin echo")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "failed"
    assert frames[-1]["message"] == "That needs more permissions."

    again = await _status(client, "auth_required")
    assert "more permissions (scope mcp admin)" in again["error_message"]
    assert "scope=mcp+admin" in again["auth_url"]
    assert (await _sign_in(again["auth_url"])).status_code == 200
    await _status(client, "ready")
    llm.script(call, Reply.text("Done as admin."))
    frames = await client.turn("admin echo again")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    stats = await oauth_server.stats()
    assert stats["authorizations"] == 2
    assert stats["admin_echo"] == 1


async def test_restart_uses_stored_tokens_without_refreshing(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    platform, clients = chat
    port = free_port()
    await _start(platform, oauth_server, port)
    client, auth_url = await _auth_required(platform)
    assert (await _sign_in(auth_url)).status_code == 200
    await _status(client, "ready")
    await client.close()
    before = await oauth_server.stats()

    platform.process.signal(signal.SIGTERM)
    assert await platform.process.wait_exit() == 0
    mark = len(platform.process.events)
    await platform.start(_overrides(port))
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "remote", after=mark, timeout=30
    )
    assert not platform.process.find(
        "tools.authorization_required", lambda e: e["server"] == "remote"
    )[1:]  # only the first start asked
    after = await oauth_server.stats()
    assert after["authorizations"] == before["authorizations"] == 1
    assert after.get("refresh_requests", 0) == 0  # a good stored token is used as it is
    assert after["token_authorization_code"] == 1
    assert after["unauthorized"] == before["unauthorized"]  # the stored token was accepted

    client = await platform.connect()
    clients.append(client)
    await client.expect("session_info")
    llm.script(_echo_calls("after-restart"), Reply.text("Done."))
    frames = await client.turn("echo after restart")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"


async def _cli_auth(platform: ChatPlatform, env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``mcp-platform auth remote``; "sign in" (open the URL it prints, without
    following the redirect back) and paste the redirect address. Returns the exit code,
    its output and the pasted address."""
    cli = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "auth",
        "remote",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert cli.stdout is not None
        assert cli.stdin is not None
        auth_url = None
        head: list[str] = []
        async with asyncio.timeout(30):
            while auth_url is None:
                line = (await cli.stdout.readline()).decode()
                assert line, (await cli.stderr.read()).decode() if cli.stderr else ""
                head.append(line)
                if line.strip().startswith("http"):
                    auth_url = line.strip()
        async with httpx2.AsyncClient(follow_redirects=False) as browser:
            redirect = (await browser.get(auth_url)).headers["location"]
        cli.stdin.write(redirect.encode() + b"\n")
        await cli.stdin.drain()
        async with asyncio.timeout(30):
            rest = (await cli.stdout.read()).decode()
            code = await cli.wait()
        return code, "".join(head) + rest, redirect
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()


async def _inspect(platform: ChatPlatform) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "inspect",
        "remote",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(platform.process.env),
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_auth_while_the_platform_waits_then_logout(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """The platform runs and waits for a person; the operator authorizes from a terminal
    (the redirect port is the platform's, so the address is pasted): the waiting server
    picks the stored tokens up and connects, without a restart. ``--logout`` forgets them."""
    platform, clients = chat
    port = free_port()
    await _start(platform, oauth_server, port)
    client, _ = await _auth_required(platform)
    clients.append(client)
    env = dict(platform.process.env)

    code, output, redirect = await _cli_auth(platform, env)
    assert code == 0, output
    assert "authorized 'remote': 2 tools" in output
    assert redirect.startswith(f"http://127.0.0.1:{port}/oauth/callback?")
    assert f"port {port} is in use" in output  # the platform holds it: paste

    await _status(client, "ready")  # the waiting ToolActor noticed the stored tokens
    stats = await oauth_server.stats()
    assert stats["authorizations"] == 1
    assert stats["registrations"] == 1  # the command reused the platform's registration
    llm.script(_echo_calls("via-cli"), Reply.text("Done."))
    frames = await client.turn("echo")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    # The platform's own page for that redirect says where to paste it.
    async with httpx2.AsyncClient() as browser:
        page = await browser.get(redirect)
    assert page.status_code == 400
    assert "mcp-platform auth" in page.text
    db = platform.config_dir / "data" / "chat_history.db"
    _assert_secrets_absent(platform, clients, db)

    logout = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "auth",
        "--logout",
        "remote",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await logout.communicate()
    assert logout.returncode == 0
    assert b"forgot the tokens of 'remote'" in out
    assert _stored_secrets(db) == []


async def test_cli_auth_takes_the_redirect_itself_when_the_platform_is_down(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """Nothing listens on the redirect port: the command does, and the browser's redirect
    reaches it directly (no paste); ``mcp-platform inspect`` and the platform then use the
    stored tokens."""
    platform, _ = chat
    port = free_port()
    _write_servers(platform, oauth_server)
    platform.write_runtime_config(_overrides(port))
    code, out = await _inspect(platform)
    assert code == 1
    assert "mcp-platform auth remote" in out
    cli = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "auth",
        "remote",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=dict(platform.process.env),
    )
    try:
        assert cli.stdout is not None
        auth_url = None
        async with asyncio.timeout(30):
            while auth_url is None:
                line = (await cli.stdout.readline()).decode()
                assert line
                if line.strip().startswith("http"):
                    auth_url = line.strip()
            async with httpx2.AsyncClient(follow_redirects=True) as browser:
                landed = await browser.get(auth_url)
            assert landed.status_code == 200
            assert "go back to the terminal" in landed.text
            rest = (await cli.stdout.read()).decode()
            assert await cli.wait() == 0, rest
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    assert "authorized 'remote'" in rest
    code, out = await _inspect(platform)
    assert code == 0, out
    assert "remote__echo(text)" in out

    await platform.start(_overrides(port))
    await platform.process.wait_for(
        "tools.server_ready", lambda e: e["server"] == "remote", timeout=30
    )
    assert not platform.process.find("tools.authorization_required")
    assert (await oauth_server.stats())["authorizations"] == 1


async def test_tokens_live_in_postgres_with_postgres_storage(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer, postgres_dsn: str
) -> None:
    """With ``chat.storage.type: postgres`` the tokens are rows of PostgreSQL's
    ``oauth_tokens`` (no SQLite file anywhere): the Connect flow stores them through the
    persistence room, ``mcp-platform auth --logout`` deletes them there, and
    ``mcp-platform auth`` stores new ones there that the waiting platform picks up."""
    platform, clients = chat
    port = free_port()
    platform.process.env["CHAT_DB_DSN"] = postgres_dsn
    _write_servers(platform, oauth_server)
    storage = {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": "CHAT_DB_DSN"}}}}
    await platform.start(
        {**_overrides(port), "chat": {**_overrides(port)["chat"], **storage["chat"]}}
    )
    client, auth_url = await _auth_required(platform)
    clients.append(client)
    assert (await _sign_in(auth_url)).status_code == 200
    await _status(client, "ready")
    [(owner, tokens)] = pg.query(postgres_dsn, "SELECT owner, tokens FROM oauth_tokens", ())
    assert owner == ""
    assert orjson.loads(tokens)["access_token"]
    assert not list(platform.config_dir.glob("*.db*"))

    env = dict(platform.process.env)
    logout = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "auth",
        "--logout",
        "remote",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await logout.communicate()
    assert logout.returncode == 0, out
    assert b"forgot the tokens of 'remote'" in out
    assert pg.query(postgres_dsn, "SELECT COUNT(*) FROM oauth_tokens", ()) == [(0,)]

    # The next connect asks again (the platform's tokens are gone from the database).
    await oauth_server.revoke()
    await _status(client, "auth_required", timeout=30)
    code, output, _ = await _cli_auth(platform, env)
    assert code == 0, output
    assert "the tokens are stored in" in output
    await _status(client, "ready", timeout=30)
    assert pg.query(
        postgres_dsn, "SELECT COUNT(*) FROM oauth_tokens WHERE tokens IS NOT NULL", ()
    ) == [(1,)]
    assert not list(platform.config_dir.glob("*.db*"))


# -- owners: each signs in for themselves (chat.websocket.auth on) ----------------------------

ALICE_TOKEN = "alice-owner-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
BOB_TOKEN = "bob-owner-0a1b2c3d4e5f60718293a4b5c6d7e8f9a"


def _owners_overrides(port: int, *, idle: float) -> dict[str, Any]:
    overrides = _overrides(port)
    overrides["mcp"]["oauth"]["owner_idle_timeout"] = idle
    overrides["chat"]["websocket"]["auth"] = {
        "tokens": [
            {"owner": "alice", "token_env": "ALICE_TOKEN"},
            {"owner": "bob", "token_env": "BOB_TOKEN"},
        ]
    }
    return overrides


async def _start_owners(platform: ChatPlatform, server: OAuthServer, *, idle: float) -> None:
    """Start with alice's and bob's tokens; return once ``remote`` is served per owner."""
    platform.process.env.update(ALICE_TOKEN=ALICE_TOKEN, BOB_TOKEN=BOB_TOKEN)
    _write_servers(platform, server)
    await platform.start(_owners_overrides(free_port(), idle=idle))
    await platform.process.wait_for(
        "tools.per_owner", lambda e: e["server"] == "remote", timeout=30
    )


async def _own_auth_url(client: ChatClient) -> str:
    """The authorization URL of this tab's owner's own connection to ``remote``."""
    info = await client.expect("session_info")
    [remote] = [s for s in info["servers"] if s["name"] == "remote"]
    if remote["status"] == "auth_required" and remote.get("auth_url"):
        return str(remote["auth_url"])
    async with asyncio.timeout(30):
        while True:
            frame = await _status(client, "auth_required")
            if frame.get("auth_url"):
                return str(frame["auth_url"])


def _rows(db: Path) -> dict[str, tuple[str, str | None]]:
    """Owner → (access token, subject-free refresh token) of ``remote``'s stored rows."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT owner, tokens FROM oauth_tokens WHERE server = 'remote' AND tokens IS NOT NULL"
        ).fetchall()
    return {
        owner: (orjson.loads(tokens)["access_token"], orjson.loads(tokens).get("refresh_token"))
        for owner, tokens in rows
    }


def _offered(request_json: dict[str, Any] | None) -> set[str]:
    assert request_json is not None
    return {tool["function"]["name"] for tool in request_json.get("tools", [])}


async def test_each_owner_signs_in_for_themselves_and_idle_connections_close(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """With WebSocket authentication on, alice and bob each sign in to ``remote`` on a
    connection of their own: alice's tokens never serve bob (the authorization server
    sees each one's own subject), each tab sees its owner's state and tools, the rows are
    per owner, ``mcp-platform auth --logout remote --owner alice`` forgets only alice's,
    and an owner's idle connection closes and reopens with the stored tokens."""
    platform, clients = chat
    await _start_owners(platform, oauth_server, idle=1.0)
    alice = await platform.connect(token=ALICE_TOKEN)
    bob = await platform.connect(token=BOB_TOKEN)
    clients += [alice, bob]
    alice_url, bob_url = await _own_auth_url(alice), await _own_auth_url(bob)
    assert alice_url != bob_url

    await oauth_server.subject("alice")
    page = await _sign_in(alice_url)
    assert page.status_code == 200, page.text
    await _status(alice, "ready")
    mark = len(platform.process.events)

    # Alice's turn offers her tools and runs on her connection, with her token.
    llm.script(_echo_calls("from-alice"), Reply.text("Echoed for alice."))
    frames = await alice.turn("echo as alice")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    assert "remote__echo" in _offered(llm.requests[-1].json)

    # Bob is still asked to sign in: his model is not offered alice's tools, and a call
    # to them never reaches the server with her token.
    llm.script(_echo_calls("from-bob"), Reply.text("No tool for bob."))
    frames = await bob.turn("echo as bob")
    assert not [f for f in frames if f["type"] == "tool_execution"]
    assert "remote__echo" not in _offered(llm.requests[-1].json)
    assert "no tool named 'remote__echo'" in orjson.dumps(llm.requests[-1].json).decode()
    assert not [f for f in bob.frames if f["type"] == "server_status" and f["status"] == "ready"]
    assert (await oauth_server.subjects())["echo"] == {"alice": 1}

    # Bob signs in as himself (another person at the authorization server).
    await oauth_server.subject("bob")
    assert (await _sign_in(bob_url)).status_code == 200
    await _status(bob, "ready")
    llm.script(_echo_calls("bob-again"), Reply.text("Echoed for bob."))
    frames = await bob.turn("echo as bob again")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    # The built-in read_resource tool reads on the caller's own connection too.
    read = ToolCall(
        "platform__read_resource", '{"uri": "memo://whoami", "server": "remote"}', id="who"
    )
    for client, name in ((alice, "alice"), (bob, "bob")):
        llm.script(Reply.tool_calls([read]), Reply.text("Read."))
        await client.turn("who am I there?")
        assert f"you are {name}" in orjson.dumps(llm.requests[-1].json).decode()
    subjects = await oauth_server.subjects()
    assert subjects["echo"] == {"alice": 1, "bob": 1}
    assert subjects["refresh_tokens"] == {"alice": 1, "bob": 1}
    stats = await oauth_server.stats()
    assert stats["authorizations"] == 2
    assert stats["distinct_tokens"] == 2

    db = platform.config_dir / "data" / "chat_history.db"
    rows = _rows(db)
    assert set(rows) == {"alice", "bob"}  # nothing stored as the platform's own ("")
    assert rows["alice"] != rows["bob"]
    _assert_secrets_absent(platform, clients, db)

    # Alice's connection, unused, closes after the idle timeout; her next call reopens it
    # with her stored tokens (nobody is asked again).
    await platform.process.wait_for(
        "tools.owner_idle_closed", lambda e: e["owner"] == "alice", after=mark, timeout=30
    )
    llm.script(_echo_calls("after-idle"), Reply.text("Echoed again."))
    frames = await alice.turn("echo after a pause")
    assert [f["status"] for f in frames if f["type"] == "tool_execution"][-1] == "completed"
    await platform.process.wait_for(
        "tools.owner_reopening", lambda e: e["owner"] == "alice", after=mark, timeout=5
    )
    assert (await oauth_server.subjects())["echo"] == {"alice": 2, "bob": 1}
    assert (await oauth_server.stats())["authorizations"] == 2

    # The operator forgets alice's tokens only.
    logout = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "auth",
        "--logout",
        "remote",
        "--owner",
        "alice",
        stdout=asyncio.subprocess.PIPE,
        env=dict(platform.process.env),
    )
    out, _ = await logout.communicate()
    assert logout.returncode == 0
    assert b"forgot the tokens of 'remote' for owner 'alice'" in out
    assert set(_rows(db)) == {"bob"}
    # Bob's row still serves him, from a terminal too.
    inspect = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "--config-dir",
        str(platform.config_dir),
        "inspect",
        "--owner",
        "bob",
        "remote",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(platform.process.env),
    )
    out, _ = await inspect.communicate()
    assert inspect.returncode == 0, out.decode()
    assert b"echo" in out


async def test_a_server_asking_from_tools_list_on_is_per_owner_too(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """``initialize`` passes without a token and the 401 comes with ``tools/list`` (its
    JSON-RPC error no longer says 401): the server is still served per owner, and an
    owner's sign-in makes it ready for them; once the server is turned off, their tab
    no longer lists their own connection's resources."""
    platform, clients = chat
    await oauth_server.lenient()
    await _start_owners(platform, oauth_server, idle=900.0)
    alice = await platform.connect(token=ALICE_TOKEN)
    clients.append(alice)
    assert (await _sign_in(await _own_auth_url(alice))).status_code == 200
    await _status(alice, "ready")
    # The shared connection was never retried as "down": its refusal meant "per owner".
    assert not platform.process.find("tools.server_down", lambda e: e["actor"] == "tool:remote")

    # Her own connection's resources reach her tab, and leave it with the server: turned
    # off, its ToolActor stops with her connection (the shared state was resource-less
    # throughout, so only her own tab is told).
    async with asyncio.timeout(20):
        while not _uris(await alice.expect("resources_changed")):
            pass
    servers = {"mcpServers": {"remote": {"url": oauth_server.url, "enabled": False}}}
    (platform.config_dir / "servers_config.json").write_bytes(orjson.dumps(servers))
    assert _uris(await alice.expect("resources_changed", timeout=20)) == set()


def _uris(frame: dict[str, Any]) -> set[str]:
    return {str(r["uri"]) for r in frame["resources"]}


async def test_a_removed_owner_loses_their_connection_at_once(
    chat: tuple[ChatPlatform, list[ChatClient]], llm, oauth_server: OAuthServer
) -> None:
    """Alice removed from ``chat.websocket.auth.tokens`` (a live change): her connection's
    actor stops at once (``tools.owner_removed``), and her turn still running cannot use
    it: its tool call fails and never reaches the server with her token."""
    platform, clients = chat
    await _start_owners(platform, oauth_server, idle=900.0)
    alice = await platform.connect(token=ALICE_TOKEN)
    clients.append(alice)
    await oauth_server.subject("alice")
    assert (await _sign_in(await _own_auth_url(alice))).status_code == 200
    await _status(alice, "ready")

    # Alice's turn is held just before its tool call: the model's stream waits at a gate.
    gate = Gate()
    llm.script(
        Reply.stream(
            ToolCallDelta(0, "late", "remote__echo", ""),
            ToolCallDelta(0, arguments='{"text": "late"}'),
            gate,
            Finish("tool_calls"),
            Done(),
        ),
        Reply.text("Could not echo."),
    )
    mark = len(platform.process.events)
    await alice.send({"type": "user_message", "message": "echo, slowly"})
    await gate.reached.wait()

    overrides = _owners_overrides(platform.port, idle=900.0)
    overrides["chat"]["websocket"]["auth"] = {
        "tokens": [{"owner": "bob", "token_env": "BOB_TOKEN"}]
    }
    platform.write_runtime_config(overrides)
    removed = await platform.process.wait_for(
        "tools.owner_removed", lambda e: e["server"] == "remote", after=mark, timeout=30
    )
    assert removed["owner"] == "alice"
    assert not removed["stop_cut_short"]

    gate.open()
    await platform.process.wait_for("turn.finished", after=mark, timeout=30)
    # Her tools left with her connection: the call is refused before any server.
    [result] = [m for m in llm.requests[-1].json["messages"] if m["role"] == "tool"]
    assert result["content"].startswith("Error:")
    assert "alice" not in (await oauth_server.subjects()).get("echo", {})
