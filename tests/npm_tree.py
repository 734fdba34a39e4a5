"""The npm packages the tests run (``tests/npm``), installed exactly as locked.

``tests/npm/package.json`` pins each package to an exact version and the committed
``package-lock.json`` pins the whole tree; ``.ci/run`` installs it with ``npm ci
--ignore-scripts`` before the tests. :func:`ensure_npm_tree` lets ``uv run pytest`` work on a
fresh checkout too: when a pinned package is missing or at another version it runs the same
``npm ci`` once (under a file lock, since ``npm ci`` starts by deleting ``node_modules`` and
pytest-xdist workers would otherwise race), then no test needs the network.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["NODE_MODULES", "NPM_DIR", "ensure_npm_tree", "installed_version", "pinned_version"]

NPM_DIR = Path(__file__).resolve().parent / "npm"
NODE_MODULES = NPM_DIR / "node_modules"
_LOCK_FILE = NPM_DIR / ".install.lock"
"""Held while checking or installing the tree (the file itself stays; it is git-ignored)."""


def pinned_version(package: str) -> str:
    """The exact version ``tests/npm/package.json`` pins ``package`` to."""
    dependencies: dict[str, str] = json.loads((NPM_DIR / "package.json").read_text())[
        "dependencies"
    ]
    return dependencies[package]


def installed_version(package: str) -> str | None:
    """The version of ``package`` in ``tests/npm/node_modules`` (``None``: not installed)."""
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.is_file():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def _stale() -> list[str]:
    dependencies: dict[str, str] = json.loads((NPM_DIR / "package.json").read_text())[
        "dependencies"
    ]
    return [name for name, version in dependencies.items() if installed_version(name) != version]


def ensure_npm_tree() -> None:
    """Make sure every package of ``tests/npm/package.json`` is installed at its pin.

    Fails the calling test (with npm's own error) when that cannot be done.
    """
    with _LOCK_FILE.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _stale():
            return
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is not on PATH: the tests need {', '.join(_stale())} from npm")
        done = subprocess.run(
            [
                npm,
                "ci",
                "--prefix",
                str(NPM_DIR),
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or _stale():
            pytest.fail(f"`npm ci --prefix tests/npm` failed: {done.stderr[-2000:]}")
