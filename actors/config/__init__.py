"""The ConfigActor's room: watching and applying the configuration files (``actor.py``;
the configuration's schema and merge rules are the top-level ``config`` package)."""

from actors.config.actor import ConfigActor

__all__ = ["ConfigActor"]
