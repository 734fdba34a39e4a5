"""Configuration errors.

::

    ConfigError
    └── ConfigInvalid      a file could not be parsed or failed validation; ``problems``
                           lists each one with its full key path
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "ConfigInvalid"]


class ConfigError(Exception):
    """Base of configuration errors."""


class ConfigInvalid(ConfigError):
    """A configuration file (or a programmatic change) was rejected.

    Args:
        source: The file (or ``"save_runtime_config"``) that was rejected.
        problems: One line per problem, each starting with the key path it concerns.
    """

    def __init__(self, source: Path | str, problems: list[str]) -> None:
        self.source = str(source)
        self.problems = list(problems)
        count = len(self.problems)
        listing = "; ".join(self.problems)
        super().__init__(f"{self.source}: {count} problem{'s' if count != 1 else ''}: {listing}")
