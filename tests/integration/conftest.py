"""Run the real ``mcp-platform`` console script as a child process and read its log.

:class:`PlatformProcess` starts the installed entry point with a private config
directory, parses every stdout line as a JSON log event, and lets a test await an event
by name (no sleeps): ``await proc.wait_for("platform.ready")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.chat import START_TIMEOUT, ChatClient, ChatPlatform
from tests.scripted_llm import ScriptedLLM

ENTRY_POINT = Path(sys.executable).with_name("mcp-platform")

STARTUP_EVENTS = frozenset({"gateway.listening", "platform.ready"})
"""Events that :meth:`PlatformProcess.wait_for` awaits with :data:`START_TIMEOUT` unless
told otherwise."""
WAIT_TIMEOUT = 15.0
"""Seconds :meth:`PlatformProcess.wait_for` waits for any other event by default."""


class PlatformProcess:
    """A running ``mcp-platform`` and the events it has logged so far."""

    def __init__(self, config_dir: Path, env: dict[str, str]) -> None:
        self.config_dir = config_dir
        self.env = env
        self.events: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self.stderr = b""
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._own_group = False

    async def start(
        self,
        *args: str,
        pass_config_dir: bool = True,
        launcher: Sequence[str] = (),
        new_session: bool = False,
        program: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """Start the entry point (with ``--config-dir`` unless told not to).

        Args:
            args: More arguments for ``mcp-platform``.
            pass_config_dir: Pass ``--config-dir`` (else the environment decides).
            launcher: A command that runs ``mcp-platform`` (e.g. ``uv run …``): the
                script is then named by its name, as an operator types it.
            new_session: Start in a session (and process group) of its own, as a shell
                does for a foreground job, so :meth:`signal_group` reaches it all.
            program: Another ``mcp-platform`` script to run (e.g. an installed tool's).
            cwd: The directory to start it in (default: the test's).
        """
        flags = ["--config-dir", str(self.config_dir)] if pass_config_dir else []
        script = str(program or ENTRY_POINT)
        command = [*launcher, "mcp-platform"] if launcher else [script]
        self._own_group = new_session
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            *flags,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=self.env,
            start_new_session=new_session,
            cwd=cwd,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode()
            self.raw_lines.append(line)
            event = orjson.loads(line)  # every line must be one JSON object
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def find(
        self, name: str, where: Callable[[dict[str, Any]], bool] | None = None
    ) -> list[dict[str, Any]]:
        """Events named ``name`` (and matching ``where``) logged so far."""
        return [e for e in self.events if e.get("event") == name and (where is None or where(e))]

    async def wait_for(
        self,
        name: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The first event named ``name`` at index >= ``after``; fails if the process exits.
        ``timeout`` defaults to :data:`START_TIMEOUT` for the start-up events, else to
        :data:`WAIT_TIMEOUT`."""
        if timeout is None:
            timeout = START_TIMEOUT if name in STARTUP_EVENTS else WAIT_TIMEOUT
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.events[after:]:
                    if event.get("event") == name and (where is None or where(event)):
                        return event
                if self._reader is not None and self._reader.done():
                    raise AssertionError(
                        f"process ended before logging {name!r}; log:\n{''.join(self.raw_lines)}"
                        f"\nstderr:\n{self.stderr.decode(errors='replace')}"
                    )
                await self._changed.wait()

    async def only(
        self,
        name: str,
        where: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The one event named ``name`` (and matching ``where``), awaited: a log line can
        reach the test after the frame that followed it (the process writes both, on
        different pipes and sockets), so reading the log at once flakes on a busy machine."""
        await self.wait_for(name, where, timeout=timeout)
        matches = self.find(name, where)
        assert len(matches) == 1, matches
        return matches[0]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group, as a terminal does on Ctrl-C (needs
        ``new_session``: the group is then the started process's own)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signum)

    async def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """The exit code, once the process ended (a hang guard: a process that exits at
        start, e.g. on a bad config, takes its whole start-up first)."""
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            if self._reader is not None:
                await self._reader
            assert self.proc.stderr is not None
            self.stderr = await self.proc.stderr.read()
        return code

    async def stop(self) -> None:
        """Kill the process (its whole group if it has its own) if it still runs (test
        clean-up): a launcher killed alone would leave the platform behind it running."""
        if self.proc is not None and self.proc.returncode is None:
            if self._own_group:
                # Only while its leader lives: after that, the group id may be reused.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    """The scripted OpenAI-compatible LLM server (a real HTTP server on 127.0.0.1)."""
    async with ScriptedLLM() as server:
        yield server


@pytest.fixture
def platform_env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment for the child: no API keys of the developer's, JSON logs."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
async def platform_factory(
    tmp_path: Path, platform_env: dict[str, str]
) -> AsyncIterator[Callable[..., PlatformProcess]]:
    """Build (not start) PlatformProcess objects; every one is killed at the end."""
    made: list[PlatformProcess] = []

    def make(config_dir: Path | None = None, env: dict[str, str] | None = None) -> PlatformProcess:
        directory = config_dir or tmp_path / "config"
        directory.mkdir(parents=True, exist_ok=True)
        proc = PlatformProcess(directory, env if env is not None else dict(platform_env))
        made.append(proc)
        return proc

    yield make
    for proc in made:
        await proc.stop()


@pytest.fixture
async def chat(
    platform_factory: Callable[..., PlatformProcess], llm: ScriptedLLM
) -> AsyncIterator[tuple[ChatPlatform, list[ChatClient]]]:
    """A ChatPlatform (not started) and a list the test puts its clients in; they are
    closed at the end. Modules that need another setup define their own ``chat``."""
    platform = ChatPlatform(platform_factory(), llm)
    clients: list[ChatClient] = []
    yield platform, clients
    for client in clients:
        await client.close()
