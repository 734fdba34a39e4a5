"""The real platform process on PostgreSQL (``chat.storage.type: postgres``): a chat turn
through a real WebSocket client is stored in the tests' PostgreSQL (a fresh schema), a
restarted process shows the history, and neither the DSN nor its password appears in
anything the process writes. No SQLite file is created.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests import postgres as pg
from tests.integration.chat import ChatClient, ChatPlatform
from tests.integration.conftest import PlatformProcess
from tests.scripted_llm import Reply, ScriptedLLM

PASSWORD = "pg-s3cret-pw-4711"
"""Sent in the DSN (trust authentication ignores it): it must never be logged."""


def _with_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


async def test_a_chat_turn_is_stored_in_postgres_and_a_restart_shows_it(
    platform_factory: Callable[..., PlatformProcess],
    llm: ScriptedLLM,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    dsn = _with_password(postgres_dsn)
    storage = {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": "CHAT_DB_DSN"}}}}
    clients: list[ChatClient] = []
    processes: list[PlatformProcess] = []

    async def start() -> ChatPlatform:
        process = platform_factory(tmp_path / "config")
        process.env["CHAT_DB_DSN"] = dsn
        processes.append(process)
        platform = ChatPlatform(process, llm)
        await platform.start(storage)
        return platform

    try:
        platform = await start()
        opened = await platform.process.only("persistence.opened")
        assert opened["storage_type"] == "postgres"
        assert opened["path"] == pg_description(postgres_dsn)
        client = await platform.connect()
        clients.append(client)
        conversation_id = (await client.expect("session_info"))["conversation_id"]
        llm.script(Reply.text("Stored in PostgreSQL.", chunks=4))
        await client.turn("Where do you keep this?")
        assert pg.query(
            postgres_dsn,
            "SELECT role, content, status FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ) == [
            ("user", "Where do you keep this?", "complete"),
            ("assistant", "Stored in PostgreSQL.", "complete"),
        ]
        await client.close()
        platform.process.signal(signal.SIGTERM)
        assert await platform.process.wait_exit() == 0

        again = await start()
        reader = await again.connect(conversation_id)
        clients.append(reader)
        history = (await reader.expect("session_info"))["messages"]
        assert [(m["role"], m["content"]) for m in history] == [
            ("user", "Where do you keep this?"),
            ("assistant", "Stored in PostgreSQL."),
        ]
        await reader.close()
        again.process.signal(signal.SIGTERM)
        assert await again.process.wait_exit() == 0
    finally:
        for client in clients:
            await client.close()
    assert not list((tmp_path / "config").glob("*.db*"))
    for process in processes:
        written = "".join(process.raw_lines) + process.stderr.decode(errors="replace")
        assert PASSWORD not in written
        assert dsn not in written


def pg_description(dsn: str) -> str:
    """What the platform logs for the database (host, port, database only)."""
    parts = urlsplit(dsn)
    return f"postgresql://{parts.hostname}:{parts.port}{parts.path}"


async def test_an_unreachable_postgres_stops_the_start_saying_where_never_the_password(
    platform_factory: Callable[..., PlatformProcess],
    llm: ScriptedLLM,
    tmp_path: Path,
    unused_tcp_port: int,
) -> None:
    process = platform_factory(tmp_path / "config")
    process.env["CHAT_DB_DSN"] = f"postgresql://chat:{PASSWORD}@127.0.0.1:{unused_tcp_port}/chat"
    platform = ChatPlatform(process, llm)
    platform.write_runtime_config(
        {"chat": {"storage": {"type": "postgres", "postgres": {"dsn_env": "CHAT_DB_DSN"}}}}
    )
    await process.start()
    crashed = await process.wait_for("actor.crashed", lambda e: e["actor"] == "persistence")
    assert crashed["error"].startswith("StorageUnavailable: cannot connect to PostgreSQL at ")
    assert f"postgresql://127.0.0.1:{unused_tcp_port}/chat" in crashed["error"]
    await process.wait_for("actor.gave_up", lambda e: e["actor"] == "persistence", timeout=30)
    assert await process.wait_exit(timeout=30) == 1
    written = "".join(process.raw_lines) + process.stderr.decode(errors="replace")
    assert PASSWORD not in written
