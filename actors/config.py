"""The ConfigActor: owns the configuration files and tells everyone when they change.

Design note: the rules (merge, validation, atomic versioned writes) live in
``config/store.py``; this actor is the shell around them. A child task watches the config
directory with watchfiles (the *directory*, because an editor's save or an atomic write
replaces the file rather than modifying it) and sends the actor a private message; the
actor re-reads, validates and either publishes :class:`ConfigChanged` with the changed key
paths or :class:`ConfigRejected`, keeping the last good configuration and leaving the
operator's file untouched.

An edit can be seen half-written (editors truncate, then write): before rejecting, the
actor waits ``settle_seconds`` and re-reads once; only content that is still invalid then
is rejected.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import watchfiles
from pydantic import BaseModel

from bus.actor import Actor
from bus.errors import MailboxClosed
from bus.messages import (
    ConfigChanged,
    ConfigRejected,
    GetConfig,
    Message,
    ReloadRuntimeConfig,
    SaveRuntimeConfig,
    UpdateRuntimeConfig,
)
from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot
from config.store import ConfigStore, set_keys

__all__ = ["ConfigActor"]


class _FilesChanged(Message):
    """From the watcher task to its actor: these files were touched."""

    paths: tuple[str, ...]


Source = Literal["runtime_file", "servers_file", "api"]


class ConfigActor(Actor):
    """Serves the configuration (GetConfig, SaveRuntimeConfig, ReloadRuntimeConfig) and
    publishes ConfigChanged / ConfigRejected when the files change.

    Args:
        store: The store of the config directory. It outlives restarts of this actor, so a
            restarted ConfigActor keeps the last good configuration.
        debounce_ms: watchfiles' debounce: events closer together are one change.
        settle_seconds: Wait before re-reading a file that failed to parse.
    """

    default_name: ClassVar[str] = "config"
    subscriptions: ClassVar[tuple[type[BaseModel], ...]] = (
        GetConfig,
        SaveRuntimeConfig,
        UpdateRuntimeConfig,
        ReloadRuntimeConfig,
        _FilesChanged,
    )

    def __init__(
        self, store: ConfigStore, *, debounce_ms: int = 50, settle_seconds: float = 0.15
    ) -> None:
        super().__init__()
        self.store = store
        self._debounce_ms = debounce_ms
        self._settle = settle_seconds
        self._watched: tuple[Path, ...] = ()
        self._watcher: asyncio.Task[None] | None = None
        self._watcher_stop = asyncio.Event()

    async def on_start(self) -> None:
        try:
            self.store.snapshot  # noqa: B018 - loaded by the wiring before we start?
        except RuntimeError:
            self.store.load()
        else:
            # A restart: pick up edits made while no watcher was running.
            await self._reload({self.store.runtime_path, self.store.servers_path})
        self._restart_watcher()

    async def on_stop(self) -> None:
        self._watcher_stop.set()

    async def handle(self, message: BaseModel) -> Any:
        match message:
            case GetConfig():
                return self.store.snapshot
            case SaveRuntimeConfig(overrides=overrides):
                return await self._apply_call(
                    "api", lambda: self.store.save_runtime_config(overrides)
                )
            case UpdateRuntimeConfig(changes=changes):
                # Read-modify-write in this actor's mailbox order: concurrent updates
                # never lose each other.
                overrides = set_keys(self.store.overrides, changes)
                snapshot = await self._apply_call(
                    "api", lambda: self.store.save_runtime_config(overrides)
                )
                self.log.info("config.updated", keys=sorted(changes), version=snapshot.version)
                return snapshot
            case ReloadRuntimeConfig():
                return await self._apply_call("api", self.store.reload_runtime_config)
            case _FilesChanged(paths=paths):
                await self._reload({Path(p) for p in paths})
        return None

    # -- reloading ------------------------------------------------------------------------

    async def _apply_call(
        self, source: Source, call: Callable[[], tuple[ConfigSnapshot, list[str]]]
    ) -> ConfigSnapshot:
        started = time.perf_counter()
        try:
            snapshot, keys = call()
        except ConfigInvalid as exc:
            await self._reject(exc)
            raise
        await self._changed(snapshot, keys, source, started)
        return snapshot

    async def _reload(self, paths: set[Path]) -> None:
        started = time.perf_counter()
        runtime = self.store.runtime_path
        if runtime in paths and not runtime.exists():
            await asyncio.sleep(self._settle)  # an editor may be replacing it
            if not runtime.exists():
                self.store.reset_runtime_config(apply=False)
                self.log.warning("config.recreated", file=str(runtime), reason="file was deleted")
        source: Source = "runtime_file" if runtime in paths else "servers_file"
        try:
            result = self.store.reload_changed(paths)
        except ConfigInvalid as first:
            await asyncio.sleep(self._settle)  # maybe caught half-written: look once more
            try:
                result = self.store.reload_changed(paths)
            except ConfigInvalid as exc:
                await self._reject(exc)
                return
            if result is None:
                await self._reject(first)
                return
        if result is None:
            return  # our own write, or no content change
        snapshot, keys = result
        await self._changed(snapshot, keys, source, started)

    async def _changed(
        self, snapshot: ConfigSnapshot, keys: list[str], source: Source, started: float
    ) -> None:
        if not keys:
            self.log.debug("config.unchanged", source=source, version=snapshot.version)
            return
        self.log.info(
            "config.reloaded",
            source=source,
            changed_keys=keys,
            version=snapshot.version,
            revision=snapshot.revision,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        await self.publish(
            ConfigChanged(snapshot=snapshot, changed_keys=tuple(keys), source=source)
        )
        if snapshot.servers_path.parent not in self._watched:
            self._restart_watcher()

    async def _reject(self, exc: ConfigInvalid) -> None:
        self.log.error(
            "config.rejected",
            source=exc.source,
            reason=str(exc),
            problems=exc.problems,
            kept_version=self.store.snapshot.version,
            kept_revision=self.store.snapshot.revision,
        )
        await self.publish(
            ConfigRejected(source=exc.source, reason=str(exc), problems=tuple(exc.problems))
        )

    # -- watching -------------------------------------------------------------------------

    def _restart_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        directories = {self.store.config_dir, self.store.servers_path.parent}
        self._watched = tuple(sorted(directories))
        self._watcher = self.spawn(self._watch(self._watched), name="watch")

    async def _watch(self, directories: tuple[Path, ...]) -> None:
        async for changes in watchfiles.awatch(
            *directories,
            debounce=self._debounce_ms,
            step=10,
            stop_event=self._watcher_stop,
            recursive=False,
        ):
            # Forward every touched file: which ones matter is decided by the actor when it
            # handles them (a just-applied edit may have switched the servers file).
            relevant = tuple(sorted({path for _change, path in changes}))
            if relevant:
                try:
                    await self.send(self.name, _FilesChanged(paths=relevant))
                except MailboxClosed:
                    return  # we are stopping: nobody will reload any more
