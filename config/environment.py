"""API keys and other secrets come from the environment, or from ``.env`` files.

A ``.env`` file is read from the config directory and, when the program runs from a
source checkout, from the project directory (the config directory's wins; see
``ConfigLocation.dotenv_dirs`` in ``config/locations.py``); a variable already set in the
real environment always wins over both. Values are never written anywhere by the program.
The parser takes the common subset of the format: ``KEY=value``, optional ``export``,
``#`` comments, single or double quotes (double quotes understand ``\\n``, ``\\t``,
``\\"`` and ``\\\\``).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["load_dotenv_files", "parse_dotenv"]

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse the text of a ``.env`` file; lines that are not assignments are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        key, raw = match.groups()
        if raw[:1] == '"' and raw.rfind('"') > 0:
            inner = raw[1 : raw.rfind('"')]
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), inner)
        elif raw[:1] == "'" and raw.rfind("'") > 0:
            value = raw[1 : raw.rfind("'")]
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
        values[key] = value
    return values


def load_dotenv_files(
    directories: list[Path], environ: MutableMapping[str, str] | None = None
) -> list[Path]:
    """Set variables from each directory's ``.env`` that the environment lacks.

    Later directories win over earlier ones; the real environment wins over all.

    Returns:
        The ``.env`` files that were read.
    """
    env = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    read: list[Path] = []
    seen: set[Path] = set()
    for directory in directories:
        path = (directory / ".env").resolve()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        merged.update(parse_dotenv(path.read_text(encoding="utf-8")))
        read.append(path)
    for key, value in merged.items():
        env.setdefault(key, value)
    return read
