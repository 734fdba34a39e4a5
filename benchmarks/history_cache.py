"""Memory of the orchestrator's history cache when every conversation is long.

Run with ``uv run python benchmarks/history_cache.py`` (``--conversations 256``,
``--messages 1000``, ``--chars 200``).

In one process, two fresh child processes each fill a cache with ``conversations`` x
``messages`` stored messages of ``chars`` characters (built as the PersistenceActor builds
them, ``StoredMessage.model_validate`` of a row with usage, model and turn id), the way the
orchestrator fills it (one ``put`` per conversation, as a turn's first LoadHistory):

* **bounded**: :class:`actors.orchestrator.history.HistoryCache` with the platform's
  bound (``HISTORY_CACHE_BYTES``);
* **by entries** (the baseline, the cache before this release): every conversation kept,
  the bound was 256 conversations whatever their size.

Reported per variant: RSS growth (``VmRSS`` after minus before, MiB), conversations kept,
the cache's own estimate. Not a test: pytest does not collect ``benchmarks/``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = """
import sys
from pathlib import Path
from actors.messages import StoredMessage
from actors.orchestrator.actor import HISTORY_CACHE_BYTES
from actors.orchestrator.history import HistoryCache

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

variant, conversations, messages, chars = sys.argv[1], *map(int, sys.argv[2:5])
cache = HistoryCache(HISTORY_CACHE_BYTES if variant == "bounded" else 1 << 62)
before = rss()
for c in range(conversations):
    cid = f"{c:08d}-0000-4000-8000-000000000000"
    rows = [
        StoredMessage.model_validate({
            "id": c * messages + i, "conversation_id": cid,
            "role": "assistant" if i % 2 else "user", "content": chr(97 + i % 26) * chars,
            "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
            "model": "m-1", "status": "complete", "turn_id": f"turn-{c}-{i // 2}",
            "finish_reason": "stop", "created_at": 1.0 + i,
        })
        for i in range(messages)
    ]
    cache.put(cid, rows)
    del rows
print(f"{rss() - before:.1f} {len(cache)} {cache.size / 2**20:.1f}")
"""


def run(variant: str, conversations: int, messages: int, chars: int) -> tuple[float, int, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(conversations), str(messages), str(chars)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout.split()
    return float(out[0]), int(out[1]), float(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=256)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chars", type=int, default=200)
    args = parser.parse_args()
    n, m, c = args.conversations, args.messages, args.chars
    print(f"history cache: {n} conversations x {m} messages of {c} chars")
    for variant in ("bounded", "by entries"):
        grown, kept, estimate = run(variant.split()[0], n, m, c)
        print(
            f"  {variant:11} RSS +{grown:7.1f} MiB, {kept:4d} conversations kept, "
            f"estimate {estimate:.1f} MiB"
        )


if __name__ == "__main__":
    main()
