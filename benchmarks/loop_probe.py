"""Where a process's event loop stalls: runs a Python script with every callback of the
event loop and every collection of the cyclic garbage collector timed, and writes the long
ones to a JSON file when the process exits.

``python benchmarks/loop_probe.py OUT.json THRESHOLD_MS SCRIPT [ARGS...]`` runs ``SCRIPT``
as ``__main__`` with ``ARGS`` (the benchmarks run ``mcp-platform``'s entry point this way,
``load.py --stalls``). Recorded, each with its ``perf_counter`` start and duration in ms:

* ``steps``: callbacks of the event loop (``asyncio.Handle._run``) that ran for at least
  ``THRESHOLD_MS``: a task's step (its name, its coroutine, and where the task stopped
  next) or a plain callback (its qualified name). A step that long holds up every stream
  the process relays. A collection of the garbage collector during a step is part of it.
* ``collections``: every collection of at least ``THRESHOLD_MS / 4`` (its generation).

The wrapper costs ~1 µs per callback. Wall clock, not CPU: a step of a process the kernel
preempted (2 cores, four busy processes) looks as long as one that computed. Not a test, and
not part of the product: nothing in ``actors/`` imports it.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import runpy
import sys
import time
from pathlib import Path
from typing import Any

import orjson


def _describe(handle: asyncio.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]  # asyncio's own attribute
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        where = "done"
        awaited: Any = coro
        while awaited is not None:  # the innermost frame the task is suspended in
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:
                break
            where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        return f"task {task.get_name()} {getattr(coro, '__qualname__', '?')} (then at {where})"
    return f"callback {getattr(callback, '__qualname__', repr(callback))}"


def main() -> None:
    out, threshold_ms, script = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    threshold = threshold_ms / 1000
    steps: list[dict[str, Any]] = []
    collections: list[dict[str, Any]] = []
    run = asyncio.Handle._run

    def timed_run(handle: asyncio.Handle) -> None:
        started = time.perf_counter()
        run(handle)
        took = time.perf_counter() - started
        if took >= threshold:
            steps.append({"at": started, "ms": took * 1000, "what": _describe(handle)})

    asyncio.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    began = [0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        took = time.perf_counter() - began[0]
        if took >= threshold / 4:
            collections.append(
                {"at": began[0], "ms": took * 1000, "generation": info["generation"]}
            )

    gc.callbacks.append(on_collection)

    def dump() -> None:
        out.write_bytes(orjson.dumps({"steps": steps, "collections": collections}))

    atexit.register(dump)
    sys.argv = sys.argv[3:]
    # As if ``python SCRIPT`` ran: its directory first on the path, not this one (whose
    # ``bus.py`` would shadow the platform's ``bus`` package).
    sys.path[0] = str(Path(script).resolve().parent)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
