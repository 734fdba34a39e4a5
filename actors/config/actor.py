"""The ConfigActor: owns the configuration files and tells everyone when they change.

Design note: the rules (merge, validation, atomic versioned writes, which changes loosen
security) live in ``config/store.py`` and ``config/security.py``; this actor is the shell
around them. A child task watches the config directory with watchfiles (the *directory*,
because an editor's save or an atomic write replaces the file rather than modifying it)
and sends the actor a private message; the actor re-reads, validates and either publishes
:class:`ConfigChanged` with the changed key paths or :class:`ConfigRejected`, keeping the
last good configuration and leaving the operator's file untouched.

The partial-write rule. A file is often seen *in transit*: editors and scripts truncate,
pause 20-300 ms, then write; a full disk leaves an empty file; ``rm`` and some editors'
rename dance leave none for a moment. Such a file parses as "fewer overrides", i.e. the
open defaults. So the actor first waits until the files' content has stayed the same for
:data:`SETTLE_SECONDS` whenever what it read is suspect: invalid, blank or missing, a
missing servers file, or a change that loosens security. Then, with the settled content:

* invalid: rejected (ConfigRejected), the last good configuration stays;
* blank or missing runtime file: nothing is applied (``config.runtime_blank``), however
  long it stays so. It is not recreated while running either: the copy of the defaults
  says ``tokens: []``, which would read as an explicit loosening;
* a loosening the file states explicitly: applied, logged as ``config.loosened``
  (warning); one it does not state (inherited from the defaults): the value in force is
  kept, logged as ``config.loosening_refused``; the rest of the change applies.

An ordinary complete edit that loosens nothing is applied at once (~60 ms after the save).
While the actor waits, its mailbox waits too (at most ``SETTLE_SECONDS`` times
``_MAX_SETTLE_ROUNDS``): a GetConfig is answered after the files have settled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, assert_never

import watchfiles
from pydantic import BaseModel, Field

from actors.messages import (
    ConfigChanged,
    ConfigRejected,
    GetConfig,
    ReloadRuntimeConfig,
    RuntimeConfigReset,
    RuntimeConfigUpdated,
    SaveRuntimeConfig,
    UpdateRuntimeConfig,
)
from bus.actor import Actor
from bus.errors import MailboxClosed
from bus.messages import Message
from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot
from config.store import Applied, Candidate, ConfigStore, set_keys

__all__ = ["SETTLE_SECONDS", "ConfigActor"]


class _FilesChanged(Message):
    """From the watcher task to its actor: these files were touched."""

    type: Literal["files_changed"] = "files_changed"
    paths: tuple[str, ...]


Source = Literal["runtime_file", "servers_file", "api"]

_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Suffixes of the files SQLite keeps beside a database (never a configuration file)."""
_DEFAULT_FILTER = watchfiles.DefaultFilter()
"""What ``awatch`` drops unless told otherwise (editor swap files, ``.git``, caches)."""

WATCH_STEP_MS = 50
"""watchfiles' step: its thread looks at what changed every this many ms, and hands a
batch over once a step brought nothing new. The SQLite history beside the configuration
changes with every commit; its files are filtered out, but only in Python, after the batch
woke the event loop: at 10 ms a lone conversation's turns woke it ~0.3-0.5 times per turn
(~50 times a second), at 50 ms ~5 times less. An edit is seen ~0.05-0.1 s after its save."""

SETTLE_SECONDS = 0.5
"""How long a suspect file's content must stay the same before it is applied (or
rejected): longer than an editor's truncate-then-write pause (20-300 ms), short enough that
an operator sees the result of a save at once."""
_MAX_SETTLE_ROUNDS = 8
"""A file that keeps changing is waited for at most this many settle periods (4 s); its
content is then treated as unsettled: no loosening is applied from it."""


ConfigInbox = Annotated[
    GetConfig
    | SaveRuntimeConfig
    | UpdateRuntimeConfig
    | ReloadRuntimeConfig
    | RuntimeConfigUpdated
    | RuntimeConfigReset
    | _FilesChanged,
    Field(discriminator="type"),
]
"""What the ConfigActor handles: the configuration requests and its watcher's news."""


class ConfigActor(Actor[ConfigInbox]):
    """Serves the configuration (GetConfig, SaveRuntimeConfig, ReloadRuntimeConfig) and
    publishes ConfigChanged / ConfigRejected when the files change.

    Args:
        store: The store of the config directory. It outlives restarts of this actor, so a
            restarted ConfigActor keeps the last good configuration.
        debounce_ms: watchfiles' debounce: events closer together are one change.
        settle_seconds: How long a suspect file's content must stay the same before it is
            applied or rejected (:data:`SETTLE_SECONDS`; tests pass other values).
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
        self, store: ConfigStore, *, debounce_ms: int = 50, settle_seconds: float = SETTLE_SECONDS
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
            await self._reload({self.store.runtime_path, self.store.servers_path}, "runtime_file")
        self._restart_watcher()

    async def on_stop(self) -> None:
        self._watcher_stop.set()

    async def handle(self, message: ConfigInbox) -> ConfigSnapshot | None:
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
                await self.publish(RuntimeConfigUpdated(changes=changes))
                return snapshot
            case RuntimeConfigUpdated(changes=changes):
                # Another replica's set_config (not subscribed: see the message's note).
                await self._apply_shared(changes)
                return None
            case RuntimeConfigReset(version=version):
                # Another replica's mcp-reset-config (not subscribed, as above).
                await self._apply_shared_reset(version)
                return None
            case ReloadRuntimeConfig():
                # The files as they are, under the same partial-write rule as an edit;
                # an invalid file fails the request (and is published as rejected).
                await self._reread("api", raise_invalid=True)
                return self.store.snapshot
            case _FilesChanged(paths=paths):
                touched = {Path(p) for p in paths}
                source: Source = (
                    "runtime_file" if self.store.runtime_path in touched else "servers_file"
                )
                await self._reload(touched, source)
                return None
            case _:
                assert_never(message)

    async def _apply_shared(self, changes: dict[str, Any]) -> None:
        """Apply another replica's update to this replica's runtime file; one this
        replica's configuration refuses is rejected here (published, logged) only."""
        overrides = set_keys(self.store.overrides, changes)
        try:
            snapshot = await self._apply_call(
                "api", lambda: self.store.save_runtime_config(overrides)
            )
        except ConfigInvalid as exc:
            self.log.warning("config.shared_update_refused", keys=sorted(changes), reason=str(exc))
            return
        self.log.info("config.updated", keys=sorted(changes), version=snapshot.version, shared=True)

    async def _apply_shared_reset(self, origin_version: int) -> None:
        """Reset this replica's runtime file to its defaults, as another replica's was.
        Written and read here (the watcher's later look finds nothing new), so the reset
        is not seen as this replica's own and published again."""

        def reset() -> Applied:
            self.store.reset_runtime_config(apply=False)
            applied = self.store.commit(self.store.prepare(), settled=True)
            assert applied is not None  # the copy of config.yaml is never blank
            return applied

        started = time.perf_counter()
        try:
            applied = reset()
        except (ConfigInvalid, OSError) as exc:
            self.log.warning("config.shared_reset_refused", reason=str(exc))
            if isinstance(exc, ConfigInvalid):
                await self._reject(exc)
            return
        self.log.info(
            "config.reset",
            version=applied.snapshot.version,
            origin_version=origin_version,
            shared=True,
        )
        await self._changed(applied, "api", started)

    # -- reloading ------------------------------------------------------------------------

    async def _apply_call(self, source: Source, call: Callable[[], Applied]) -> ConfigSnapshot:
        started = time.perf_counter()
        try:
            applied = call()
        except ConfigInvalid as exc:
            await self._reject(exc)
            raise
        await self._changed(applied, source, started)
        return applied.snapshot

    async def _reload(self, paths: set[Path], source: Source) -> None:
        """The watcher saw ``paths`` change: apply what changed, if anything did."""
        if self.store.take_changes(paths):
            await self._reread(source)

    async def _reread(self, source: Source, *, raise_invalid: bool = False) -> None:
        """Read both files and apply them under the partial-write rule (module docstring).

        Raises:
            ConfigInvalid: Only with ``raise_invalid``: the settled content is invalid
                (it has been rejected and published as such first).
        """
        started = time.perf_counter()
        version_before = self.store.snapshot.version
        try:
            candidate: Candidate | None = self.store.prepare()
        except ConfigInvalid:
            candidate = None  # maybe caught half-written: judged once it has settled
        settled = False
        if candidate is None or self._suspect(candidate):
            settled, stable = await self._wait_until_settled()
            try:
                candidate = self.store.prepare()
            except ConfigInvalid as exc:
                await self._reject(exc)
                if raise_invalid:
                    raise
                return
            # Changed again between the last look and this read: not the settled content.
            settled = settled and candidate.runtime_text == stable[0]
        else:
            settled = True  # nothing loosens, nothing is blank: an ordinary edit, at once
        try:
            applied = self.store.commit(candidate, settled=settled)
        except ConfigInvalid as exc:  # keeping a value in force broke a cross-key rule
            await self._reject(exc)
            if raise_invalid:
                raise
            return
        if applied is None:
            self.log.warning(
                "config.runtime_blank",
                file=str(self.store.runtime_path),
                state="missing" if candidate.runtime_text is None else "empty",
                kept_version=self.store.snapshot.version,
                hint="the configuration in force stays; write the file (or run "
                "mcp-reset-config) to change it",
            )
            return
        await self._changed(applied, source, started)
        if (
            source == "runtime_file"
            and candidate.from_defaults
            and candidate.version != version_before
        ):
            # A new copy of the defaults that this actor did not write: mcp-reset-config
            # (the program's own writes are seen by the store and never reach here).
            self.log.info("config.reset", version=candidate.version, shared=False)
            await self.publish(RuntimeConfigReset(version=candidate.version))

    def _suspect(self, candidate: Candidate) -> bool:
        """Whether ``candidate`` may be a file caught in transit, to be judged only once
        the files have settled."""
        servers_vanished = not candidate.servers_path.exists() and bool(
            self.store.snapshot.servers.mcp_servers
        )
        return candidate.blank or servers_vanished or bool(self.store.loosenings(candidate))

    async def _wait_until_settled(self) -> tuple[bool, tuple[str | None, str | None]]:
        """Wait until both files' content has stayed the same for the settle period.

        Returns:
            Whether they settled (``False``: still changing after ``_MAX_SETTLE_ROUNDS``
            periods) and their last content (:meth:`ConfigStore.fingerprint`).
        """
        previous = self.store.fingerprint()
        for _ in range(_MAX_SETTLE_ROUNDS):
            await asyncio.sleep(self._settle)
            now = self.store.fingerprint()
            if now == previous:
                return True, now
            previous = now
        self.log.warning("config.unsettled", waited_s=self._settle * _MAX_SETTLE_ROUNDS)
        return False, previous

    async def _changed(self, applied: Applied, source: Source, started: float) -> None:
        snapshot, keys = applied.snapshot, applied.changed_keys
        if applied.refused:
            # Fail closed: the values in force stay; say which and why, never a token.
            self.log.warning(
                "config.loosening_refused",
                source=source,
                keys=sorted(applied.refused),
                would=[applied.refused[key] for key in sorted(applied.refused)],
                reason="a change that loosens security is applied only from a settled file "
                "that states the key itself",
                version=snapshot.version,
            )
        if applied.loosened:
            self.log.warning(
                "config.loosened",
                source=source,
                keys=sorted(applied.loosened),
                what=[applied.loosened[key] for key in sorted(applied.loosened)],
                version=snapshot.version,
            )
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

    def _may_be_config(self, change: watchfiles.Change, path: str) -> bool:
        """watchfiles' filter: its default one, and the SQLite history and its companions
        (``-wal``, ``-shm``, ``-journal``), which live in the config directory itself for
        an install made before the default became ``data/chat_history.db`` (a
        subdirectory, not watched: its writes never reach the notify thread at all), or
        when ``db_path`` names a file there.

        Without it every commit of the history woke this actor (thousands of times in a
        burst of turns, ~3% of the platform's CPU) only for :meth:`ConfigStore.take_changes`
        to ignore the file. Everything else still reaches the actor, which decides (a
        servers file switched by an edit not yet applied must not be filtered out here).
        """
        if not _DEFAULT_FILTER(change, path):
            return False
        name = Path(path).name
        if name.endswith(_SQLITE_COMPANIONS):
            return False
        return name != self.store.snapshot.db_path.name

    async def _watch(self, directories: tuple[Path, ...]) -> None:
        async for changes in watchfiles.awatch(
            *directories,
            watch_filter=self._may_be_config,
            debounce=self._debounce_ms,
            step=WATCH_STEP_MS,
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
