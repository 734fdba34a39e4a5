#!/bin/bash
# One quiet pass of the hot path's benchmarks, the code before and after side by side.
#   OLD=/path/to/a/worktree/of/the/code/before  bash benchmarks/quiet_pass.sh   (run from the checkout after)
# Today's benchmark scripts are copied into OLD, each benchmark alternates OLD and this checkout,
# everything goes to $OUT/all.txt (default /tmp/bench). Byte-compile both trees first
# (uv run python -m compileall -q .venv/lib actors bus config) where PYTHONDONTWRITEBYTECODE is set.
set -u
NEW=$(pwd); OLD=${OLD:?set OLD to a work tree of the code before}; OUT=${OUT:-/tmp/bench}
mkdir -p "$OUT"
rm -rf "$OLD/benchmarks" && cp -r "$NEW/benchmarks" "$OLD/benchmarks"
# tools.py's part 1c runs the platform's own HTTP/1.1 client: a tree without it keeps its own tools.py.
[ -f "$OLD/actors/llm/http1.py" ] || git -C "$OLD" checkout -- benchmarks/tools.py
run() { # tree benchmark args...
  local tree=$1 name=$2; shift 2
  echo "### $(date +%T) load=$(cut -d' ' -f1 /proc/loadavg) $tree $name $*" | tee -a "$OUT/all.txt"
  (cd "$tree" && timeout 600 uv run python "benchmarks/$name.py" "$@") >> "$OUT/all.txt" 2>&1
}
for _ in 1 2; do run "$OLD" chat_path --quick; run "$NEW" chat_path --quick; done
for _ in 1 2 3; do run "$OLD" turn_cpu --conversations 1 --rounds 200; run "$NEW" turn_cpu --conversations 1 --rounds 200; done
for _ in 1 2; do run "$OLD" tools --quick; run "$NEW" tools --quick; done
for _ in 1 2 3; do run "$OLD" load; run "$NEW" load; done
run "$NEW" load --stalls
run "$NEW" floor --runs 3 --scenarios 1x200
run "$OLD" idle_connections; run "$NEW" idle_connections
run "$NEW" history_cache
echo "### done $(date +%T)" >> "$OUT/all.txt"
