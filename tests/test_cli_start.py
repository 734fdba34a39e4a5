"""``mcp-platform run``'s start (``actors/cli.py``): what it imports before the platform,
and the collector kept off the platform's imports. Each in a fresh interpreter (these are
process-wide facts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(program: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_import_actors_cli_loads_neither_the_sdk_nor_the_platform() -> None:
    """The CLI spawns the stdio servers before these imports (~0.8 s of CPU)."""
    program = (
        "import sys, actors.cli\n"
        "print(sorted(m for m in ('mcp', 'actors.platform', 'actors.tools.actor', 'bus.bus',"
        " 'pydantic') if m in sys.modules))"
    )
    assert _run(program) == "['pydantic']"


def test_the_platforms_imports_are_frozen_out_of_the_collector() -> None:
    """Imported with the collector off, then frozen (never scanned again); the collector
    is on again afterwards, and stays off if it was off."""
    program = (
        "import gc\n"
        "from actors.cli import _imports_kept_from_the_collector as kept\n"
        "with kept():\n"
        "    on_inside = gc.isenabled()\n"
        "    import actors.platform\n"
        "frozen, on_after = gc.get_freeze_count(), gc.isenabled()\n"
        "gc.disable()\n"
        "with kept():\n"
        "    pass\n"
        "print(on_inside, frozen > 50_000, on_after, gc.isenabled())"
    )
    assert _run(program) == "False True True False"
