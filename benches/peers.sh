#!/usr/bin/env bash
# Compares cairn with just, make and ninja on the same work, measured by hyperfine in one run.
#
#   W1  start-up: one no-op task                      cairn vs just vs make      (goal: CPU ≤ just's)
#   W2  fan-out: 1,000 independent `true` tasks, -j2  cairn vs make vs ninja      (goal: CPU ≤ 1.2× make's)
#                                                     and a bare Rust spawn loop (goal: wall ≤ 1.3× its)
#   W3  chain: 200 tasks, each after the previous     cairn vs make               (goal: wall ≤ make's)
#
# The peers are installed here (apt; `just` from PyPI's rust-just wheel into a private venv), never by the
# build. Usage: bash benches/peers.sh [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=20
[ "${1:-}" = "--runs" ] && runs="$2"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/cairn-bench"
mkdir -p "$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v ninja >/dev/null || missing+=(ninja-build)
command -v make >/dev/null || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [ ! -x "$cache/venv/bin/just" ]; then
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install -q rust-just
fi
just="$cache/venv/bin/just"

cargo build --release --locked -q --bin cairn --example spawn_loop
cairn="$CARGO_TARGET_DIR/release/cairn"
spawn_loop="$CARGO_TARGET_DIR/release/examples/spawn_loop"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# W1: one no-op task.
mkdir -p "$work/w1"
printf '[tasks.noop]\nrun = "true"\n' > "$work/w1/tasks.toml"
printf 'noop:\n\ttrue\n' > "$work/w1/justfile"
printf '.PHONY: noop\nnoop:\n\ttrue\n' > "$work/w1/Makefile"

# W2: 1,000 independent tasks.
mkdir -p "$work/w2"
python3 - "$work/w2" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1]); n = 1000
names = [f"t{i}" for i in range(n)]
(d / "tasks.toml").write_text("".join(f'[tasks.{t}]\nrun = "true"\n' for t in names)
    + "[tasks.all]\ndeps = [" + ", ".join(f'"{t}"' for t in names) + "]\n")
(d / "Makefile").write_text(".PHONY: all " + " ".join(names) + "\nall: " + " ".join(names) + "\n"
    + "".join(f"{t}:\n\ttrue\n" for t in names))
(d / "build.ninja").write_text("rule t\n  command = true\n" + "".join(f"build {t}: t\n" for t in names)
    + "build all: phony " + " ".join(names) + "\ndefault all\n")
PY

# W3: a chain of 200.
mkdir -p "$work/w3"
python3 - "$work/w3" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1]); n = 200
(d / "tasks.toml").write_text("".join(
    f'[tasks.t{i}]\nrun = "true"\n' + (f'deps = ["t{i-1}"]\n' if i else "") for i in range(n)))
(d / "Makefile").write_text(".PHONY: " + " ".join(f"t{i}" for i in range(n)) + "\n" + "".join(
    f"t{i}:{' t' + str(i-1) if i else ''}\n\ttrue\n" for i in range(n)))
PY

bench() {
    local name="$1" dir="$2"; shift 2
    (cd "$dir" && hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/$name.json" "$@" >/dev/null 2>&1)
}
bench w1 "$work/w1" -n cairn "$cairn run noop" -n just "$just noop" -n make "make -s noop"
bench w2 "$work/w2" -n cairn "$cairn run all -j2" -n make "make -s -j2 all" -n ninja "ninja -j2 -C $work/w2" \
    -n spawn-loop "$spawn_loop 1000 2"
# ninja skips work it thinks is done; its outputs are never written, so every run does all 1,000 tasks.
bench w3 "$work/w3" -n cairn "$cairn run t199 -j2" -n make "make -s -j2 t199"

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
def load(name):
    data = json.loads((work / f"{name}.json").read_text())["results"]
    return {r["command"]: r for r in data}
def cpu(r): return (r["user"] + r["system"]) * 1000
def wall(r): return r["mean"] * 1000
print(f"{'workload':<34}{'tool':<12}{'wall ms':>10}{'cpu ms':>10}")
for name, title in [("w1", "W1 one no-op task"), ("w2", "W2 1,000 tasks, -j2"), ("w3", "W3 200-task chain")]:
    for cmd, r in load(name).items():
        print(f"{title:<34}{cmd:<12}{wall(r):>10.2f}{cpu(r):>10.2f}")
w1, w2, w3 = load("w1"), load("w2"), load("w3")
print()
print("goal                                          ratio   target")
print(f"W1 cairn CPU / just CPU                       {cpu(w1['cairn'])/cpu(w1['just']):6.2f}   ≤ 1.00")
print(f"W2 cairn CPU / make CPU                       {cpu(w2['cairn'])/cpu(w2['make']):6.2f}   ≤ 1.20")
print(f"W2 cairn CPU / ninja CPU                      {cpu(w2['cairn'])/cpu(w2['ninja']):6.2f}   (info)")
print(f"W2 cairn wall / spawn-loop wall               {wall(w2['cairn'])/wall(w2['spawn-loop']):6.2f}   ≤ 1.30")
print(f"W3 cairn wall / make wall                     {wall(w3['cairn'])/wall(w3['make']):6.2f}   ≤ 1.00")
PY
