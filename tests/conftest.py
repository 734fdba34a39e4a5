"""Shared fixtures.

``log_events`` captures the platform's structured log as parsed JSON events (the same
pipeline production uses, written to a buffer instead of stdout), so tests assert on
event names and fields exactly as an operator tailing the log would see them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import settings

from actors.logs import configure_logging, set_secrets

# No per-example deadline anywhere: the suite runs two workers on a 2-core machine, where an
# example that takes 1 ms alone once took 256 ms; timing is for benchmarks, not tests.
settings.register_profile("platform", deadline=None)
settings.load_profile("platform")


class LogCapture:
    """Parsed JSON log events written while the fixture is active."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    @property
    def text(self) -> str:
        """Everything written, raw."""
        return self.buffer.getvalue()

    def events(self, name: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Events (optionally only those named ``name`` whose fields match ``fields``)."""
        parsed = [orjson.loads(line) for line in self.text.splitlines() if line.strip()]
        return [
            e
            for e in parsed
            if (name is None or e.get("event") == name)
            and all(e.get(k) == v for k, v in fields.items())
        ]


@pytest.fixture
def log_events() -> Iterator[LogCapture]:
    """Capture log events at DEBUG level as JSON; restores stdout/INFO afterwards."""
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield LogCapture(buffer)
    finally:
        set_secrets(())
        configure_logging("INFO", "json", stream=None)
