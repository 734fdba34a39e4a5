"""Loading, merging, validating and writing the configuration files.

Design note: this module has no tasks and no bus; the ConfigActor (``actors/config/actor.py``)
is the thin shell that watches the files and publishes what this module computes. That
keeps every rule testable with plain data:

* effective configuration = ``config.yaml`` (the reference defaults, never written)
  deep-merged with ``runtime_config.yaml`` (the operator's overrides, possibly partial);
* a wrong type or an unknown key is rejected with its full key path, plus a suggestion
  for a likely typo;
* the program's own writes are atomic (temp file, fsync, rename) and bump
  ``_runtime_config.version``; an operator's edit is never overwritten;
* file contents are remembered by hash, so the watcher ignores the program's own writes
  and a second event for content already seen;
* the partial-write rule (:meth:`ConfigStore.commit`): while a configuration is in force,
  a blank or missing runtime file is never applied, and a change that loosens security
  (``config/security.py``) is applied only from a settled file that states it; an empty
  servers file is invalid JSON, rejected like any other.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import os
import tempfile
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from config.errors import ConfigInvalid
from config.schema import ConfigSnapshot, PlatformConfig, RuntimeMetadata, ServersConfig
from config.security import keep_in_force, loosenings, stated

__all__ = [
    "DEFAULTS_PATH",
    "METADATA_KEY",
    "RUNTIME_FILE",
    "Applied",
    "Candidate",
    "ConfigStore",
    "atomic_write_text",
    "changed_keys",
    "deep_merge",
    "parse_servers",
    "parse_yaml_mapping",
    "set_keys",
    "validate_config",
]

DEFAULTS_PATH = Path(__file__).resolve().parent / "config.yaml"
"""The reference defaults, shipped inside the ``config`` package: read, never written (an
installed package may sit in a read-only site-packages). Which directory holds the
operator's files is ``config/locations.py``'s business."""
RUNTIME_FILE = "runtime_config.yaml"
METADATA_KEY = "_runtime_config"

_RUNTIME_HEADER = """\
# MCP Platform — runtime configuration (the operator's file).
#
# Deep-merged over the reference defaults in {defaults}; it may be partial: delete what
# you do not change. Saving this file applies it live (within a second); an invalid edit
# is rejected with a config.rejected log event, the last good configuration stays in
# force, and this file is left as you wrote it. `mcp-reset-config` resets it to the
# defaults. API keys do not belong here: use the environment or a .env file.
# The _runtime_config block is maintained by the program on its own writes.

"""


# -- pure functions -------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: mappings recursively, anything else replaced."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and (value or not prefix):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def set_keys(overrides: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``overrides`` with each dotted key of ``changes`` set (missing
    sections are created).

    Raises:
        ConfigInvalid: A key runs through a value that is not a section.
    """
    result: dict[str, Any] = orjson.loads(orjson.dumps(dict(overrides)))
    for key, value in changes.items():
        node = result
        *sections, leaf = key.split(".")
        for depth, section in enumerate(sections):
            child = node.setdefault(section, {})
            if not isinstance(child, dict):
                where = ".".join(sections[: depth + 1])
                raise ConfigInvalid("set_keys", [f"{key}: {where} is not a section"])
            node = child
        node[leaf] = value
    return result


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Sorted dotted key paths whose leaf values differ between ``old`` and ``new``."""
    flat_old: dict[str, Any] = {}
    flat_new: dict[str, Any] = {}
    _flatten(old, prefix, flat_old)
    _flatten(new, prefix, flat_new)
    missing = object()
    return sorted(
        key
        for key in flat_old.keys() | flat_new.keys()
        if flat_old.get(key, missing) != flat_new.get(key, missing)
    )


def parse_yaml_mapping(text: str, source: Path | str) -> dict[str, Any]:
    """Parse YAML whose top level is a mapping (an empty file is ``{}``).

    Raises:
        ConfigInvalid: Not YAML, or not a mapping at the top.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigInvalid(source, [f"invalid YAML{where}: {problem}"]) from exc
    except (ValueError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        # PyYAML's constructors raise these for well-formed but unbuildable values
        # (`!!int abc`, a date like 2020-13-45, nesting thousands deep).
        raise ConfigInvalid(
            source, [f"invalid YAML value: {type(exc).__name__}: {exc}"[:500]]
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigInvalid(source, [f"top level must be a mapping, got {type(data).__name__}"])
    return data


def _is_comment(key: object) -> bool:
    return isinstance(key, str) and key.startswith("_")


def _without_comments(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if not _is_comment(k)}


def _strip_comments(data: dict[str, Any]) -> dict[str, Any]:
    """Drop ``_``-prefixed keys (comments) from the servers file: at the top, among server
    names, in each entry and in ``settings`` — but not inside an entry's ``env`` or
    ``headers``, whose keys are variable and header names."""
    out: dict[str, Any] = _without_comments(data)
    servers = out.get("mcpServers")
    if isinstance(servers, dict):
        out["mcpServers"] = {
            name: _without_comments(entry)
            for name, entry in servers.items()
            if not _is_comment(name)
        }
    if "settings" in out:
        out["settings"] = _without_comments(out["settings"])
    return out


def parse_servers(text: str, source: Path | str) -> ServersConfig:
    """Parse and validate ``servers_config.json``.

    Raises:
        ConfigInvalid: Not JSON, or failed validation (problems name their key paths).
    """
    try:
        # An empty file is not JSON either: a servers file caught half-written (or left
        # empty by a full disk) must not read as "no servers" and stop them all.
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigInvalid(
            source, [f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]
        ) from exc
    if not isinstance(data, dict):
        raise ConfigInvalid(source, [f"top level must be an object, got {type(data).__name__}"])
    try:
        return ServersConfig.model_validate(_strip_comments(data))
    except ValidationError as exc:
        raise ConfigInvalid(source, _describe(exc, ServersConfig)) from exc


def validate_config(data: Mapping[str, Any], source: Path | str) -> PlatformConfig:
    """Validate an effective (merged) configuration.

    Raises:
        ConfigInvalid: One problem per wrong value, missing or unknown key.
    """
    try:
        return PlatformConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigInvalid(source, _describe(exc, PlatformConfig)) from exc


def _describe(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One readable line per validation error, each starting with the full key path."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        path = ".".join(loc) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            hint = difflib.get_close_matches(loc[-1], sorted(known), n=1) if known else []
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(f"{path}: unknown key{suffix}")
        elif kind == "missing":
            problems.append(f"{path}: required key is missing")
        elif kind in _BOUNDS:
            problems.append(_bound_problem(path, error))
        elif kind == "provider_key_type":
            ctx = error.get("ctx") or {}
            problems.append(f"{path}.{ctx['key']}: {error['msg']} (got {ctx['value']!r})")
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = error.get("input")
            got = ""
            if isinstance(value, str | int | float | bool) or value is None:
                got = f" (got {value!r})"
            problems.append(f"{path}: {message}{got}")
    return problems


_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", "≥"),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "≤"),
}
"""Pydantic's bound error types: the context key holding the bound, and its symbol."""


def _bound_problem(path: str, error: ErrorDetails) -> str:
    """``chat.service.max_tool_hops: must be ≤ 100 (got 1000000000)``: the bound itself, so
    whoever set the value (an operator, or the model through ``set_config``) can fix it.

    A free provider key's bound (``config/schema.py``) names its key and value in the
    context, as its location is the provider.
    """
    ctx = error.get("ctx") or {}
    name, symbol = _BOUNDS[error["type"]]
    bound = ctx[name]
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)  # "> 0", not "> 0.0"
    value = ctx.get("value", error.get("input"))
    if "key" in ctx:
        path = f"{path}.{ctx['key']}"
    got = f" (got {value!r})" if isinstance(value, int | float) else ""
    return f"{path}: must be {symbol} {bound}{got}"


def _known_keys(model: type[BaseModel], loc: list[str]) -> set[str]:
    """Field names (and aliases) of the section at ``loc``, or empty if unknown."""
    current: Any = model
    parts = list(loc)
    while parts:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return set()
        part = parts.pop(0)
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)), None
        )
        if field is None:
            return set()
        current = _section_type(field.annotation)
        if isinstance(current, tuple):  # dict[str, Section]: skip the free key
            if not parts:
                return set()
            parts.pop(0)
            current = current[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return {f.alias or name for name, f in current.model_fields.items()}
    return set()


def _section_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is dict:
        return (typing.get_args(annotation)[1],)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return annotation


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: temp file in the same dir, fsync, rename.

    A reader (or a crash) sees the old content or the new, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(path.stat().st_mode & 0o777 if path.exists() else 0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_text(path: Path) -> str:
    """A configuration file's text; unreadable or non-UTF-8 content is ConfigInvalid."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(path, [f"not UTF-8 text (byte {exc.start}): {exc.reason}"]) from exc
    except OSError as exc:
        raise ConfigInvalid(path, [f"cannot read the file: {exc.strerror or exc}"]) from exc


def _digest(text: str | None) -> str:
    return "missing" if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_blank(text: str) -> bool:
    """Nothing but whitespace and comments: what a truncated file (or our own header cut
    short) looks like. An explicit ``{}`` is not blank: it says "no overrides"."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def _is_blank_file(text: str | None) -> bool:
    """A runtime file that exists (``None``: it does not) and is blank."""
    return text is not None and _is_blank(text)


def _servers_from(text: str | None, path: Path) -> ServersConfig:
    """The servers file's configuration; a missing file has no servers."""
    return ServersConfig() if text is None else parse_servers(text, path)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """Both files as read now, merged and validated: what a reload would put in force."""

    runtime_text: str | None
    """The runtime file's text (``None``: the file is missing)."""
    overrides: dict[str, Any]
    """The runtime file's overrides (without ``_runtime_config``)."""
    version: int
    """Its ``_runtime_config.version``."""
    config: PlatformConfig
    effective: dict[str, Any]
    """``config`` as a plain dict."""
    servers: ServersConfig
    servers_path: Path
    from_defaults: bool = False
    """``_runtime_config.created_from_defaults``: the file is the program's copy of the
    defaults (a reset, or the first start), not a save or an edit of one."""

    @property
    def blank(self) -> bool:
        """The runtime file is missing or holds only whitespace and comments."""
        return self.runtime_text is None or _is_blank(self.runtime_text)


class Applied(NamedTuple):
    """A configuration put in force."""

    snapshot: ConfigSnapshot
    changed_keys: list[str]
    """Dotted key paths whose value changed (``servers.``-prefixed for the servers file)."""
    loosened: dict[str, str]
    """Security keys it loosened (stated in a settled file), with what each loosens."""
    refused: dict[str, str]
    """Security keys it would have loosened but that were kept as they were in force."""


class ConfigStore:
    """The configuration of one config directory: load, reload, save, reset.

    Not thread-safe and not async: one owner (the ConfigActor, or a CLI command) calls it.

    Args:
        config_dir: Holds ``runtime_config.yaml``, the servers file and, by default, the
            SQLite file.
        defaults_path: The reference defaults (``config/config.yaml``).
        overlay: Keys laid over the runtime file, in memory only and never written
            (``mcp-platform --demo``'s provider): they win over both files, at every load.
    """

    def __init__(
        self,
        config_dir: Path,
        defaults_path: Path = DEFAULTS_PATH,
        *,
        overlay: Mapping[str, Any] | None = None,
    ) -> None:
        self.config_dir = config_dir.expanduser().resolve()
        self.defaults_path = defaults_path.resolve()
        self._overlay: dict[str, Any] = dict(overlay or {})
        self.runtime_path = self.config_dir / RUNTIME_FILE
        self._defaults: dict[str, Any] | None = None
        self._overrides: dict[str, Any] = {}
        self._servers_data: dict[str, Any] = {}
        self._snapshot: ConfigSnapshot | None = None
        self._revision = 0
        self._seen: dict[Path, str] = {}
        """Hash of the content last read or written per file, to skip repeated events."""

    # -- reading ---------------------------------------------------------------------------

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The configuration in force (raises if :meth:`load` never succeeded)."""
        if self._snapshot is None:
            raise RuntimeError("configuration not loaded yet: call load() first")
        return self._snapshot

    @property
    def servers_path(self) -> Path:
        """The servers file named by ``mcp.config_file`` in the configuration in force."""
        return self.snapshot.resolve(self.snapshot.config.mcp.config_file)

    def get_config(self) -> dict[str, Any]:
        """The effective configuration as a plain dict (JSON-compatible)."""
        return self.snapshot.config.model_dump(mode="json")

    def defaults(self) -> dict[str, Any]:
        """The reference defaults as parsed from ``config.yaml``."""
        if self._defaults is None:
            text = _read_text(self.defaults_path)
            self._defaults = parse_yaml_mapping(text, self.defaults_path)
            validate_config(self._defaults, self.defaults_path)
        return self._defaults

    def load(self) -> tuple[ConfigSnapshot, list[str]]:
        """Read both files: at start (creating a missing runtime file from the defaults),
        or again while a configuration is in force (then as :meth:`reload_changed` with
        ``settled=False``: a blank or missing runtime file changes nothing, and nothing
        that loosens security is applied).

        Returns:
            The snapshot in force and the key paths that changed (every key on the first
            load).

        Raises:
            ConfigInvalid: Either file is invalid; the configuration in force is unchanged.
        """
        if self._snapshot is None and not self.runtime_path.exists():
            # Only at start, with nothing in force: while running, the defaults' copy
            # (tokens: [] written out) would read as an explicit loosening.
            self.reset_runtime_config(apply=False)
        elif self._snapshot is None and _is_blank_file(self._runtime_text()):
            # A blank file at start is what a save cut short leaves (a full disk, a crash
            # between truncate and write), not a choice of the defaults: starting on them
            # would drop the tokens the operator had. Fail closed, and say how to go on.
            raise ConfigInvalid(
                self.runtime_path,
                [
                    "the runtime file is empty (a save cut short?): the platform will not "
                    "start on the defaults in its place, which would turn authentication "
                    "off. Restore it, or delete it (or run mcp-reset-config) to start from "
                    "the defaults"
                ],
            )
        applied = self.commit(self.prepare(), settled=self._snapshot is None)
        if applied is None:
            return self.snapshot, []
        return applied.snapshot, applied.changed_keys

    def reload_runtime_config(self) -> tuple[ConfigSnapshot, list[str]]:
        """Re-read both files now, whatever the watcher saw (the programmatic API)."""
        return self.load()

    def reload_changed(self, paths: set[Path], *, settled: bool = False) -> Applied | None:
        """Re-read the files among ``paths`` whose content changed since last seen.

        ``settled``: whether the caller knows the files have stopped changing (see
        :meth:`commit`). The ConfigActor decides that over time; this synchronous form
        is :meth:`take_changes`, :meth:`prepare` and :meth:`commit` in one.

        Returns:
            ``None`` when nothing relevant changed (e.g. the program's own write) or the
            runtime file is blank or missing, otherwise what was applied.

        Raises:
            ConfigInvalid: The new content is invalid (it is remembered as seen, so the
                same bad content is reported once, not at every event).
        """
        if not self.take_changes(paths):
            return None
        return self.commit(self.prepare(), settled=settled)

    def take_changes(self, paths: set[Path]) -> bool:
        """Whether any of ``paths`` is a configuration file whose content (or absence)
        differs from what was last read or written; the new content counts as seen."""
        servers_path = self.servers_path
        changed = False
        for path in {p for p in paths if p in (self.runtime_path, servers_path)}:
            text = self._read_servers_text(path) if path == servers_path else self._runtime_text()
            digest = _digest(text)
            if self._seen.get(path) != digest:
                self._seen[path] = digest
                changed = True
        return changed

    def fingerprint(self) -> tuple[str | None, str | None]:
        """The runtime file's and the servers file's content now (``None``: missing), to
        tell whether they have stopped changing. Unreadable content counts as content."""
        try:
            runtime = self._runtime_text()
        except ConfigInvalid as exc:
            runtime = str(exc)
        try:
            servers = self._read_servers_text(self._servers_path_in_force())
        except ConfigInvalid as exc:
            servers = str(exc)
        return runtime, servers

    def prepare(self) -> Candidate:
        """Read, merge and validate both files as they are now, without applying them.

        Both contents count as seen, so a rejected content is reported once.

        Raises:
            ConfigInvalid: Either file is invalid.
        """
        runtime_text = self._runtime_text()
        self._seen[self.runtime_path] = _digest(runtime_text)
        from_defaults = False
        if runtime_text is None:
            overrides: dict[str, Any] = {}
            version = self._snapshot.version if self._snapshot is not None else 0
        else:
            overrides, version, from_defaults = self._parse_runtime(runtime_text)
        config, effective = self._effective(overrides, self.runtime_path)
        servers_path = self._servers_path_for(config)
        servers_text = self._read_servers_text(servers_path)
        self._seen[servers_path] = _digest(servers_text)
        return Candidate(
            runtime_text=runtime_text,
            overrides=overrides,
            version=version,
            config=config,
            effective=effective,
            servers=_servers_from(servers_text, servers_path),
            servers_path=servers_path,
            from_defaults=from_defaults,
        )

    def loosenings(self, candidate: Candidate) -> dict[str, str]:
        """The security keys ``candidate`` would loosen relative to the configuration in
        force (nothing at the first load), each with what it loosens."""
        if self._snapshot is None:
            return {}
        return loosenings(self._snapshot.config, candidate.config)

    def commit(self, candidate: Candidate, *, settled: bool) -> Applied | None:
        """Put ``candidate`` in force, unless it is not a configuration.

        The partial-write rule: while a configuration is in force, a blank or missing
        runtime file is a file being written (or a disk-full save), never a
        configuration: nothing is applied (``None``). A security key that the candidate
        loosens is applied only if ``settled`` (the files stopped changing) and the
        runtime file states that key itself; otherwise its value in force is kept
        (fail closed) and the key is listed in ``refused``.

        Raises:
            ConfigInvalid: Keeping the values in force made the configuration invalid.
        """
        if candidate.blank and self._snapshot is not None:
            return None
        config, effective, loosened, refused = self._guarded(candidate, settled=settled)
        snapshot, keys = self._apply(
            config,
            effective,
            candidate.overrides,
            candidate.servers,
            candidate.version,
            candidate.servers_path,
        )
        return Applied(snapshot, keys, loosened, refused)

    def _guarded(
        self, candidate: Candidate, *, settled: bool
    ) -> tuple[PlatformConfig, dict[str, Any], dict[str, str], dict[str, str]]:
        """The candidate's configuration with refused loosenings set back to the values in
        force, and which loosenings were applied and which refused."""
        found = self.loosenings(candidate)
        loosened = {
            key: what
            for key, what in found.items()
            if settled and not candidate.blank and stated(candidate.overrides, key)
        }
        refused = {key: what for key, what in found.items() if key not in loosened}
        if not refused:
            return candidate.config, candidate.effective, loosened, refused
        in_force = self.snapshot.config.model_dump(mode="json")
        kept = keep_in_force(candidate.effective, in_force, refused)
        config = validate_config(kept, self.runtime_path)
        return config, config.model_dump(mode="json"), loosened, refused

    # -- writing ---------------------------------------------------------------------------

    def save_runtime_config(self, overrides: Mapping[str, Any]) -> Applied:
        """Validate, then atomically write ``overrides`` as the runtime file and apply it.

        ``overrides`` is the whole runtime file's content (partial overrides of the
        defaults); a ``_runtime_config`` block in it is ignored and rewritten. The write
        is atomic, so it counts as settled: a security key it loosens is applied if
        ``overrides`` states it, otherwise kept as in force (see :meth:`commit`).

        Raises:
            ConfigInvalid: The result would be invalid; nothing is written.
        """
        try:
            # Through JSON: tuples become lists, and anything YAML could not write is
            # refused here rather than half-way through the write.
            data = orjson.loads(
                orjson.dumps({k: v for k, v in overrides.items() if k != METADATA_KEY})
            )
        except TypeError as exc:
            raise ConfigInvalid("save_runtime_config", [f"not plain data: {exc}"]) from exc
        config, effective = self._effective(data, "save_runtime_config")
        servers_path = self._servers_path_for(config)
        servers_text = self._read_servers_text(servers_path)
        servers = _servers_from(servers_text, servers_path)
        version = self._next_version()
        meta = RuntimeMetadata(
            version=version,
            last_modified=_now(),
            default_config_path=str(self.defaults_path),
            created_from_defaults=False,
        )
        body = yaml.safe_dump(
            {METADATA_KEY: meta.model_dump(), **data},
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
        )
        text = _RUNTIME_HEADER.format(defaults=self.defaults_path.name) + body
        candidate = Candidate(
            runtime_text=text,
            overrides=data,
            version=version,
            config=config,
            effective=effective,
            servers=servers,
            servers_path=servers_path,
        )
        # Guarded before the write, so a failure leaves the file untouched.
        config, effective, loosened, refused = self._guarded(candidate, settled=True)
        atomic_write_text(self.runtime_path, text)
        self._seen[self.runtime_path] = _digest(text)
        self._seen[servers_path] = _digest(servers_text)
        snapshot, keys = self._apply(config, effective, data, servers, version, servers_path)
        return Applied(snapshot, keys, loosened, refused)

    def reset_runtime_config(
        self, *, apply: bool = True
    ) -> tuple[ConfigSnapshot, list[str]] | None:
        """Atomically rewrite the runtime file as a copy of the defaults (version bumped).

        The copy keeps ``config.yaml``'s comments, so the operator edits a documented file.
        Works whatever state the current file is in (that is what a reset is for).
        """
        defaults_text = _read_text(self.defaults_path)
        self.defaults()  # the defaults themselves must be valid
        version = self._next_version()
        meta = RuntimeMetadata(
            version=version,
            last_modified=_now(),
            default_config_path=str(self.defaults_path),
            created_from_defaults=True,
        )
        lines = defaults_text.splitlines(keepends=True)
        while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
            lines.pop(0)
        body = "".join(lines).rstrip("\n") + "\n\n"
        meta_block = yaml.safe_dump({METADATA_KEY: meta.model_dump()}, sort_keys=False)
        text = _RUNTIME_HEADER.format(defaults=self.defaults_path.name) + body + meta_block
        atomic_write_text(self.runtime_path, text)
        if not apply:
            return None
        # The program's own atomic write of the defaults (the operator ran a reset): settled,
        # and it states every key, so it may loosen (the ConfigActor logs what).
        applied = self.commit(self.prepare(), settled=True)
        assert applied is not None  # the copy of config.yaml is never blank
        return applied.snapshot, applied.changed_keys

    # -- internals -------------------------------------------------------------------------

    def _parse_runtime(self, text: str) -> tuple[dict[str, Any], int, bool]:
        data = parse_yaml_mapping(text, self.runtime_path)
        raw_meta = data.pop(METADATA_KEY, None) or {}
        try:
            meta = RuntimeMetadata.model_validate(raw_meta)
        except ValidationError as exc:
            problems = [f"{METADATA_KEY}.{p}" for p in _describe(exc, RuntimeMetadata)]
            raise ConfigInvalid(self.runtime_path, problems) from exc
        return data, meta.version, meta.created_from_defaults

    def _effective(
        self, overrides: Mapping[str, Any], source: Path | str
    ) -> tuple[PlatformConfig, dict[str, Any]]:
        merged = deep_merge(deep_merge(self.defaults(), overrides), self._overlay)
        config = validate_config(merged, source)
        return config, config.model_dump(mode="json")

    def _servers_path_for(self, config: PlatformConfig) -> Path:
        candidate = Path(config.mcp.config_file).expanduser()
        return candidate if candidate.is_absolute() else self.config_dir / candidate

    @staticmethod
    def _read_servers_text(path: Path) -> str | None:
        # Missing (None) means "no servers" (a fresh --config-dir); an empty file is not
        # JSON and is rejected like any other invalid content.
        return _read_text(path) if path.exists() else None

    def _runtime_text(self) -> str | None:
        return _read_text(self.runtime_path) if self.runtime_path.exists() else None

    def _servers_path_in_force(self) -> Path:
        if self._snapshot is not None:
            return self._snapshot.servers_path
        return self.config_dir / "servers_config.json"

    def _next_version(self) -> int:
        """One past both the version in force and the file's (which may be unreadable)."""
        in_force = self._snapshot.version if self._snapshot is not None else 0
        return max(in_force, self._file_version()) + 1

    def _file_version(self) -> int:
        try:
            data = parse_yaml_mapping(_read_text(self.runtime_path), self.runtime_path)
            version = data[METADATA_KEY]["version"]
        except (ConfigInvalid, TypeError, KeyError):
            return 0
        return version if isinstance(version, int) and version >= 0 else 0

    def _apply(
        self,
        config: PlatformConfig,
        effective: dict[str, Any],
        overrides: dict[str, Any],
        servers: ServersConfig,
        version: int,
        servers_path: Path,
    ) -> tuple[ConfigSnapshot, list[str]]:
        previous = self._snapshot
        old = (
            {
                "config": previous.config.model_dump(mode="json"),
                "servers": previous.servers.model_dump(mode="json", by_alias=True),
            }
            if previous is not None
            else {}
        )
        new = {"config": effective, "servers": servers.model_dump(mode="json", by_alias=True)}
        # Keys of the platform config are named as in the YAML (chat.websocket.port); keys
        # of the servers file keep a "servers." prefix (servers.mcpServers.demo.args).
        keys = [key.removeprefix("config.") for key in changed_keys(old, new) if "." in key]
        self._revision += 1
        self._overrides = overrides
        self._snapshot = ConfigSnapshot(
            config=config,
            servers=servers,
            version=version,
            revision=self._revision,
            config_dir=self.config_dir,
            defaults_path=self.defaults_path,
            runtime_path=self.runtime_path,
            servers_path=servers_path,
        )
        return self._snapshot, keys

    @property
    def overrides(self) -> dict[str, Any]:
        """The runtime file's overrides in force (without ``_runtime_config``)."""
        return dict(self._overrides)
