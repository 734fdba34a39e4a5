"""The ConfigActor (actors/config/actor.py) on a real Bus, a real config directory and real
watchfiles (no mocks): what an operator editing the files, and the program saving its
own changes, actually observe.

Proves: the missing runtime file is created at start and GetConfig answers; commits of
the SQLite history in the same directory do not wake the actor; an edit
(in-place or atomic replace) is published as ConfigChanged with its changed keys within a
second and logged as ``config.reloaded``; an invalid edit is published as ConfigRejected
naming the key path and logged as ``config.rejected``, the file is left byte for byte as
the operator wrote it and the last good configuration stays in force until the file is
fixed; a half-written file seen for a moment is not rejected; the program's own save is
published once (no echo from the watcher) and an invalid save fails its request without
touching the file; ReloadRuntimeConfig re-reads the files; a deleted or emptied runtime
file changes nothing while running (it is not recreated); a change that loosens security
is applied only from a settled file that states it; servers_config.json edits are
published or rejected too, an empty one rejected.

Waiting: every expected event is awaited with a deadline. The only fixed waits prove the
*absence* of an event (a second, unwanted one) and are kept short (0.3-0.5 s).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson
import pytest
import yaml
from pydantic import BaseModel

from actors.config.actor import ConfigActor
from actors.messages import (
    ConfigChanged,
    ConfigRejected,
    GetConfig,
    ReloadRuntimeConfig,
    SaveRuntimeConfig,
)
from bus.actor import Actor
from bus.bus import Bus
from bus.errors import RequestFailed
from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot
from config.store import METADATA_KEY, ConfigStore

EVENT_TIMEOUT = 3.0
"""Seconds to wait for an expected event: generous (a change shows up in ~0.1-0.4 s)."""
QUIET = 0.5
"""Seconds without an event that count as "no further event" (watcher latency ~60 ms,
plus the settle delay of a rejection)."""

ConfigEvent = ConfigChanged | ConfigRejected
EventT = TypeVar("EventT", ConfigChanged, ConfigRejected)


class ConfigProbe(Actor):
    """Subscribes to the ConfigActor's events and queues them for the test."""

    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (ConfigChanged, ConfigRejected)

    def __init__(self) -> None:
        super().__init__("config-probe")
        # Bounded: a test that lets 100 events pile up is broken; put_nowait then raises
        # QueueFull and crashes the probe, which the fixture reports.
        self.events: asyncio.Queue[ConfigEvent] = asyncio.Queue(maxsize=100)

    async def handle(self, message: BaseModel) -> None:
        assert isinstance(message, ConfigChanged | ConfigRejected)
        self.events.put_nowait(message)


@dataclass
class Running:
    """A running ConfigActor with its bus, store and event probe."""

    bus: Bus
    store: ConfigStore
    actor: ConfigActor
    probe: ConfigProbe

    @property
    def runtime_path(self) -> Path:
        return self.store.runtime_path

    @property
    def servers_path(self) -> Path:
        return self.store.config_dir / "servers_config.json"

    async def expect(self, kind: type[EventT], timeout: float = EVENT_TIMEOUT) -> EventT:
        """The next event, which must be of type ``kind``."""
        async with asyncio.timeout(timeout):
            event = await self.probe.events.get()
        assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
        return event

    async def assert_quiet(self, seconds: float = QUIET) -> None:
        """No event arrives within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                event = await self.probe.events.get()
        except TimeoutError:
            return
        pytest.fail(f"unexpected event: {event!r}")

    async def get_config(self) -> ConfigSnapshot:
        snapshot = await self.bus.request(GetConfig(), timeout=EVENT_TIMEOUT)
        assert isinstance(snapshot, ConfigSnapshot)
        return snapshot


Starter = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_config_actor(tmp_path: Path, log_events) -> AsyncIterator[Starter]:
    """Start a ConfigActor (options passed through) over ``tmp_path``; stop it at the end.

    The probe subscribes *after* the actor has started, so every test sees only the events
    its own actions cause.
    """
    tasks: list[asyncio.Task[None]] = []
    actors: list[Actor] = []

    async def start(**options: Any) -> Running:
        bus = Bus()
        store = ConfigStore(tmp_path)
        actor = ConfigActor(store, **options)
        actors.append(actor)
        tasks.append(asyncio.create_task(actor.run(bus)))
        async with asyncio.timeout(EVENT_TIMEOUT):
            await actor.wait_started()
        probe = ConfigProbe()
        actors.append(probe)
        tasks.append(asyncio.create_task(probe.run(bus)))
        async with asyncio.timeout(EVENT_TIMEOUT):
            await probe.wait_started()
        return Running(bus, store, actor, probe)

    try:
        yield start
    finally:
        for actor in reversed(actors):
            actor.request_stop()
        # A crashed actor re-raises here, so a crash the test did not notice still fails it.
        await asyncio.gather(*tasks)


def _write_in_place(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    """As an editor or a careful tool saves: a temp file in the same dir, then rename."""
    temp = path.with_name(f".{path.name}.edit")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)  # os.replace: atomic on POSIX


# -- start and GetConfig --------------------------------------------------------------------


async def test_start_creates_the_runtime_file_and_get_config_answers(
    start_config_actor: Starter, tmp_path: Path
) -> None:
    assert not (tmp_path / "runtime_config.yaml").exists()
    running = await start_config_actor()
    assert running.runtime_path.exists()
    meta = yaml.safe_load(running.runtime_path.read_text(encoding="utf-8"))[METADATA_KEY]
    assert meta["created_from_defaults"] is True
    snapshot = await running.get_config()
    assert snapshot is running.store.snapshot
    assert (snapshot.version, snapshot.revision) == (1, 1)
    assert snapshot.config.logging.level == "INFO"
    assert snapshot.runtime_path == running.runtime_path


# -- operator edits of runtime_config.yaml -------------------------------------------------------


@pytest.mark.parametrize("write", [_write_in_place, _write_atomically], ids=["in-place", "atomic"])
async def test_valid_edit_is_published_within_a_second(
    start_config_actor: Starter, log_events, write: Callable[[Path, str], None]
) -> None:
    running = await start_config_actor()
    written_at = time.monotonic()
    write(running.runtime_path, "logging:\n  level: DEBUG\n")
    event = await running.expect(ConfigChanged)
    latency = time.monotonic() - written_at
    assert latency < 1.0, f"ConfigChanged {latency:.3f} s after the write"
    assert event.changed_keys == ("logging.level",)
    assert event.source == "runtime_file"
    assert event.snapshot.config.logging.level == "DEBUG"
    assert await running.get_config() == event.snapshot
    await running.assert_quiet(0.3)  # one edit, one event (however many inotify events)
    [reloaded] = log_events.events("config.reloaded")
    assert reloaded["changed_keys"] == ["logging.level"]
    assert reloaded["source"] == "runtime_file"
    assert isinstance(reloaded["duration_ms"], int | float)
    assert reloaded["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("bad", "problem_prefix"),
    [
        ("logging:\n  level: [DEBUG\n", "invalid YAML at line 3, column 1:"),
        ('chat: {websocket: {port: "x"}}\n', "chat.websocket.port:"),
    ],
    ids=["yaml-syntax", "wrong-type"],
)
async def test_invalid_edit_is_rejected_and_the_last_good_config_stays(
    start_config_actor: Starter, log_events, bad: str, problem_prefix: str
) -> None:
    running = await start_config_actor()
    _write_in_place(running.runtime_path, "logging:\n  level: DEBUG\n")
    good = (await running.expect(ConfigChanged)).snapshot

    running.runtime_path.write_bytes(bad.encode())
    rejected = await running.expect(ConfigRejected)
    assert rejected.source == str(running.runtime_path)
    assert rejected.problems[0].startswith(problem_prefix)
    assert problem_prefix in rejected.reason
    [logged] = log_events.events("config.rejected")
    assert logged["problems"] == list(rejected.problems)
    assert logged["kept_revision"] == good.revision
    assert running.runtime_path.read_bytes() == bad.encode()  # never overwritten
    in_force = await running.get_config()
    assert in_force == good
    assert in_force.config.logging.level == "DEBUG"

    # Fixing the file applies it (and nothing else was published in between: no second
    # rejection of the same content).
    _write_in_place(running.runtime_path, "logging:\n  level: WARNING\n")
    fixed = await running.expect(ConfigChanged)
    assert fixed.changed_keys == ("logging.level",)
    assert fixed.snapshot.config.logging.level == "WARNING"
    assert (await running.get_config()).revision == good.revision + 1


async def test_half_written_file_is_not_rejected(start_config_actor: Starter, log_events) -> None:
    running = await start_config_actor(settle_seconds=0.5)
    first_write = time.monotonic()
    _write_in_place(running.runtime_path, "logging:\n  level: [DEB")  # the editor's first half
    # The editor's pause between its two writes: long enough for the watcher (~60 ms) to
    # report the half-written file, well within settle_seconds. Nothing to await: the
    # actor's first look at invalid content is deliberately silent.
    await asyncio.sleep(0.2)
    _write_in_place(running.runtime_path, "logging:\n  level: DEBUG\n")
    event = await running.expect(ConfigChanged)  # the first event: no rejection before it
    # Published only after the settle delay: the actor did see the half-written content
    # and looked again instead of rejecting it.
    assert time.monotonic() - first_write >= 0.5
    assert event.snapshot.config.logging.level == "DEBUG"
    await running.assert_quiet()
    assert log_events.events("config.rejected") == []


# -- the partial-write rule: files in transit never weaken security ------------------------

LOCKED = (
    "chat:\n  websocket:\n    allow_origins: [https://a.example]\n"
    "    auth:\n      tokens:\n      - {owner: alice, token_env: ALICE_TOKEN}\n"
)


def _owners(snapshot: ConfigSnapshot) -> list[str]:
    return [t.owner for t in snapshot.config.chat.websocket.auth.tokens]


async def test_truncate_pause_write_publishes_only_the_finished_file(
    start_config_actor: Starter, tmp_path: Path, log_events
) -> None:
    (tmp_path / "runtime_config.yaml").write_text(LOCKED, encoding="utf-8")
    running = await start_config_actor(settle_seconds=0.4)
    finished = LOCKED + "logging:\n  level: DEBUG\n"
    truncated_at = time.monotonic()
    with running.runtime_path.open("w", encoding="utf-8") as handle:  # truncates
        handle.flush()
        await asyncio.sleep(0.2)  # the editor's pause: the scenario itself
        handle.write(finished)
    event = await running.expect(ConfigChanged)
    # The empty file was seen and waited for (settle), never published.
    assert time.monotonic() - truncated_at >= 0.4
    assert event.changed_keys == ("logging.level",)
    assert _owners(event.snapshot) == ["alice"]
    await running.assert_quiet()
    assert log_events.events("config.runtime_blank") == []
    assert log_events.events("config.rejected") == []


async def test_an_emptied_file_that_stays_empty_changes_nothing(
    start_config_actor: Starter, tmp_path: Path, log_events
) -> None:
    (tmp_path / "runtime_config.yaml").write_text(LOCKED, encoding="utf-8")
    running = await start_config_actor(settle_seconds=0.2)
    in_force = await running.get_config()
    running.runtime_path.write_bytes(b"")  # `: > runtime_config.yaml`, or a full disk
    await running.assert_quiet()
    [blank] = log_events.events("config.runtime_blank")
    assert blank["state"] == "empty"
    assert blank["level"] == "warning"
    assert await running.get_config() == in_force
    assert running.runtime_path.read_bytes() == b""  # never overwritten


async def test_a_loosening_the_file_does_not_state_is_refused_and_logged(
    start_config_actor: Starter, tmp_path: Path, log_events
) -> None:
    (tmp_path / "runtime_config.yaml").write_text(LOCKED, encoding="utf-8")
    running = await start_config_actor(settle_seconds=0.2)
    # A finished file that no longer mentions auth: the defaults (no tokens) would apply.
    _write_atomically(
        running.runtime_path,
        "chat:\n  websocket:\n    allow_origins: [https://a.example]\nlogging:\n  level: DEBUG\n",
    )
    event = await running.expect(ConfigChanged)
    assert event.changed_keys == ("logging.level",)
    assert _owners(event.snapshot) == ["alice"]
    [refused] = log_events.events("config.loosening_refused")
    assert refused["keys"] == ["chat.websocket.auth.tokens"]
    assert refused["would"] == ["turns authentication off"]
    assert refused["level"] == "warning"
    assert "ALICE_TOKEN" not in log_events.text
    assert log_events.events("config.loosened") == []


async def test_a_stated_loosening_applies_once_the_file_has_settled(
    start_config_actor: Starter, tmp_path: Path, log_events
) -> None:
    (tmp_path / "runtime_config.yaml").write_text(LOCKED, encoding="utf-8")
    running = await start_config_actor(settle_seconds=0.3)
    written_at = time.monotonic()
    _write_in_place(
        running.runtime_path,
        "chat:\n  websocket:\n    allow_origins: [https://a.example]\n"
        "    auth:\n      tokens: []\n",
    )
    event = await running.expect(ConfigChanged)
    assert time.monotonic() - written_at >= 0.3  # not before it has settled
    assert event.changed_keys == ("chat.websocket.auth.tokens",)
    assert _owners(event.snapshot) == []
    [loosened] = log_events.events("config.loosened")
    assert loosened["keys"] == ["chat.websocket.auth.tokens"]
    assert loosened["what"] == ["turns authentication off"]
    assert loosened["level"] == "warning"
    assert log_events.events("config.loosening_refused") == []


# -- the program's own writes ---------------------------------------------------------------------


async def test_own_save_is_published_once_without_a_watcher_echo(
    start_config_actor: Starter, log_events
) -> None:
    running = await start_config_actor()
    reply = await running.bus.request(
        SaveRuntimeConfig(overrides={"logging": {"level": "DEBUG"}}), timeout=EVENT_TIMEOUT
    )
    assert isinstance(reply, ConfigSnapshot)
    assert reply.version == 2
    event = await running.expect(ConfigChanged)
    assert event.source == "api"
    assert event.changed_keys == ("logging.level",)
    assert event.snapshot == reply
    on_disk = yaml.safe_load(running.runtime_path.read_text(encoding="utf-8"))
    assert on_disk[METADATA_KEY]["version"] == 2
    assert on_disk["logging"] == {"level": "DEBUG"}
    await running.assert_quiet()  # the watcher saw the write, and recognised it as ours
    assert len(log_events.events("config.reloaded")) == 1


async def test_invalid_save_fails_the_request_and_writes_nothing(
    start_config_actor: Starter,
) -> None:
    running = await start_config_actor()
    before = running.runtime_path.read_bytes()
    with pytest.raises(RequestFailed) as excinfo:
        await running.bus.request(
            SaveRuntimeConfig(overrides={"chat": {"websocket": {"port": "x"}}}),
            timeout=EVENT_TIMEOUT,
        )
    cause = excinfo.value.__cause__
    assert isinstance(cause, ConfigInvalid)
    assert cause.problems[0].startswith("chat.websocket.port:")
    rejected = await running.expect(ConfigRejected)
    assert rejected.source == "save_runtime_config"
    assert rejected.problems == tuple(cause.problems)
    assert running.runtime_path.read_bytes() == before
    assert (await running.get_config()).revision == 1


async def test_reload_request_rereads_the_files(start_config_actor: Starter, log_events) -> None:
    running = await start_config_actor()
    # The request is handled long before the watcher's debounce (50 ms) reports the write,
    # so the change is applied by the request (source "api") and the watcher's report of
    # the same content is ignored.
    _write_in_place(running.runtime_path, "chat:\n  websocket:\n    port: 9100\n")
    reply = await running.bus.request(ReloadRuntimeConfig(), timeout=EVENT_TIMEOUT)
    assert isinstance(reply, ConfigSnapshot)
    assert reply.config.chat.websocket.port == 9100
    event = await running.expect(ConfigChanged)
    assert event.source == "api"
    assert event.changed_keys == ("chat.websocket.port",)
    # Reloading unchanged files answers with the same configuration and publishes nothing.
    again = await running.bus.request(ReloadRuntimeConfig(), timeout=EVENT_TIMEOUT)
    assert again.config == reply.config
    await running.assert_quiet()
    assert log_events.events("config.unchanged", source="api")


# -- deletion and the servers file ----------------------------------------------------------


async def test_deleted_runtime_file_changes_nothing_and_is_not_recreated_while_running(
    start_config_actor: Starter, log_events
) -> None:
    running = await start_config_actor(settle_seconds=0.2)
    await running.bus.request(
        SaveRuntimeConfig(overrides={"logging": {"level": "DEBUG"}}), timeout=EVENT_TIMEOUT
    )
    in_force = (await running.expect(ConfigChanged)).snapshot

    # A deleted file is a file in transit (or gone by mistake), never "the defaults": the
    # configuration in force stays, and the defaults' copy (tokens: [] written out) is
    # not put in its place while running.
    running.runtime_path.unlink()
    await running.assert_quiet()
    assert not running.runtime_path.exists()
    assert await running.get_config() == in_force
    [blank] = log_events.events("config.runtime_blank")
    assert (blank["state"], blank["file"]) == ("missing", str(running.runtime_path))
    assert blank["kept_version"] == in_force.version

    # Writing the file again applies it, as any edit.
    _write_in_place(running.runtime_path, "logging:\n  level: WARNING\n")
    event = await running.expect(ConfigChanged)
    assert event.changed_keys == ("logging.level",)
    assert event.snapshot.config.logging.level == "WARNING"


async def test_servers_file_edits_are_published_or_rejected(start_config_actor: Starter) -> None:
    running = await start_config_actor()
    servers = {"mcpServers": {"demo": {"command": "python", "args": ["-m", "demo"]}}}
    _write_atomically(running.servers_path, orjson.dumps(servers).decode())
    event = await running.expect(ConfigChanged)
    assert event.source == "servers_file"
    assert any(key.startswith("servers.mcpServers.") for key in event.changed_keys)
    assert "servers.mcpServers.demo.command" in event.changed_keys
    assert event.snapshot.servers.mcp_servers["demo"].args == ["-m", "demo"]

    _write_in_place(running.servers_path, '{"mcpServers": {"demo": ')
    rejected = await running.expect(ConfigRejected)
    assert rejected.source == str(running.servers_path)
    assert rejected.problems[0].startswith("invalid JSON at line 1")
    assert running.servers_path.read_text(encoding="utf-8") == '{"mcpServers": {"demo": '
    assert "demo" in (await running.get_config()).servers.mcp_servers

    # Empty (a save caught half-way, or a full disk): invalid too, not "no servers".
    _write_in_place(running.servers_path, "")
    rejected = await running.expect(ConfigRejected)
    assert rejected.problems[0].startswith("invalid JSON at line 1")
    assert running.servers_path.read_bytes() == b""
    assert "demo" in (await running.get_config()).servers.mcp_servers


async def test_switching_the_servers_file_by_an_edit_follows_the_new_file(
    start_config_actor: Starter,
) -> None:
    # Regression: the watcher used to filter by the old servers file name, so the first
    # write to a servers file switched by an edit was missed.
    running = await start_config_actor()
    other = running.store.config_dir / "other_servers.json"
    _write_in_place(running.runtime_path, "mcp:\n  config_file: other_servers.json\n")
    switched = await running.expect(ConfigChanged)
    assert "mcp.config_file" in switched.changed_keys
    assert switched.snapshot.servers_path == other

    _write_in_place(other, orjson.dumps({"mcpServers": {"new": {"command": "python"}}}).decode())
    event = await running.expect(ConfigChanged)
    assert event.source == "servers_file"
    assert "servers.mcpServers.new.command" in event.changed_keys


@contextmanager
def _twenty_commits(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL database at ``db_path`` that 20 commits wrote to, its connection open while
    the block runs (the last connection to close removes the -wal and -shm files)."""
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x TEXT)")
        for n in range(20):
            db.execute("INSERT INTO t VALUES (?)", (f"row {n}",))
            db.commit()
        yield db


async def test_history_database_writes_do_not_wake_the_actor_but_a_config_edit_does(
    start_config_actor: Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier install's SQLite history lives in the config directory (the default
    before ``data/chat_history.db``): its commits (the file, -wal, -shm) are filtered out
    by the watcher, an edit of the runtime file still arrives."""
    running = await start_config_actor()
    (running.store.config_dir / "chat_history.db").touch()  # the earlier default's file
    handled: list[str] = []
    handle = running.actor.handle

    async def counting(message: Any) -> Any:
        handled.append(message.type)
        return await handle(message)

    monkeypatch.setattr(running.actor, "handle", counting)
    db_path = running.store.snapshot.db_path
    assert db_path.parent == running.store.config_dir
    with _twenty_commits(db_path):
        # (while the connection is open: the last one to close removes -wal and -shm)
        assert {p.name for p in running.store.config_dir.iterdir()} >= {
            db_path.name,
            f"{db_path.name}-wal",
            f"{db_path.name}-shm",
        }
    await running.assert_quiet()
    assert handled == []

    _write_in_place(running.runtime_path, "logging:\n  level: DEBUG\n")
    event = await running.expect(ConfigChanged)
    assert event.changed_keys == ("logging.level",)
    assert set(handled) == {"files_changed"}


async def test_the_default_history_database_is_outside_the_watched_directory(
    start_config_actor: Starter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default database, ``data/chat_history.db``, is in a subdirectory the watcher
    does not watch (it watches the config directory alone, not recursively): its commits
    never reach the watcher, not even its filter (each was an inotify event read by the
    notify thread, ~45 per lone turn)."""
    seen: list[str] = []
    may_be_config = ConfigActor._may_be_config

    def counting(actor: ConfigActor, change: Any, path: str) -> bool:
        seen.append(Path(path).name)
        return may_be_config(actor, change, path)

    monkeypatch.setattr(ConfigActor, "_may_be_config", counting)
    running = await start_config_actor()
    db_path = running.store.snapshot.db_path
    assert db_path == running.store.config_dir / "data" / "chat_history.db"
    db_path.parent.mkdir()
    with _twenty_commits(db_path):
        pass
    # The edit's change comes after any change the database's writes could have made.
    _write_in_place(running.runtime_path, "logging:\n  level: DEBUG\n")
    event = await running.expect(ConfigChanged)
    assert event.changed_keys == ("logging.level",)
    assert running.runtime_path.name in seen
    assert [name for name in seen if name.startswith("chat_history")] == []
