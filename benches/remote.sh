#!/usr/bin/env bash
# What the remote cache costs and saves, measured by hyperfine in one run against a real nginx on loopback.
#
#   R1  200 tasks restored from the remote cache into an empty local cache   vs  running them   (goal: faster)
#   R2  the same 200 tasks as local hits, side by side with R1's fetches     (issue 23's goal: R1 <= 2x R2;
#       also measured interleaved, one run of each in turn)
#   R3  publishing: a writer's cold run                                      vs  the same run without a remote
#   R4  one task with 500 small output files restored from the remote cache  vs  running it
#
# With a REAPI engine (buildbox-casd, from CAIRN_TEST_BUILDBOX or .ci/run's install), also:
#   E1  the cost of the remote path per action beyond the command, from each task's phases in the run record,
#       one action at a time: cairn's side (prepare, upload, download, store) and the engine's (Execute's
#       time minus its worker's), median over 200 small tasks              (goal: <= 5 ms)
#   E2  200 results from the engine's action cache into an empty local cache  vs  the same as local hits (goal <= 2x;
#       also measured interleaved)
#   E3  200 small tasks on the engine                                         vs  the same run here
#
# Each task sleeps 50 ms and writes a 64 KiB output: a stand-in for a short compile step.
# Usage: bash benches/remote.sh [--runs N] [--tasks N]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=10
tasks=200
only_engine=false
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --tasks) tasks="$2"; shift 2 ;;
        --engine-only) only_engine=true; shift ;;
        *) echo "usage: bash benches/remote.sh [--runs N] [--tasks N] [--engine-only]" >&2; exit 2 ;;
    esac
done
command -v hyperfine >/dev/null || { apt-get update -qq && apt-get install -y -qq hyperfine; }
[ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q
cairn="$CARGO_TARGET_DIR/release/cairn"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
engine_rows() {
    local bin="${CAIRN_TEST_BUILDBOX:-$HOME/.cache/cairn/tools/buildbox/bin}"
    if [ ! -x "$bin/buildbox-casd" ]; then
        echo "E rows skipped: no buildbox-casd (run .ci/run once, or set CAIRN_TEST_BUILDBOX)" >&2
        return
    fi
    local eport
    eport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$work/casd"
    "$bin/buildbox-casd" --bind="127.0.0.1:$eport" --buildbox-run="$bin/buildbox-run" --jobs=2 \
        --runner-arg=--ro-bind-mount=/usr:/usr --runner-arg=--ro-bind-mount=/usr/bin:/bin \
        --runner-arg=--ro-bind-mount=/usr/lib:/lib --runner-arg=--ro-bind-mount=/usr/lib64:/lib64 \
        --runner-arg=--ro-bind-mount=/etc:/etc "$work/casd" >"$work/casd.log" 2>&1 &
    local casd_pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$eport") 2>/dev/null; do sleep 0.05; done
    local ep="$work/engine-project"
    mkdir -p "$ep/src"
    echo 'input' >"$ep/src/in.txt"
    {
        printf '[remote_execution]\nurl = "grpc://127.0.0.1:%s"\n\n' "$eport"
        for i in $(seq 1 "$tasks"); do
            printf '[tasks.e%s]\ninputs = ["src/**"]\noutputs = ["out/e%s.txt"]\nrun = "mkdir -p out && echo %s > out/e%s.txt"\n\n' "$i" "$i" "$i" "$i"
        done
        printf '[tasks.all]\ndeps = [%s]\n' "$(seq 1 "$tasks" | sed 's/.*/"e&"/' | paste -sd,)"
    } >"$ep/tasks.toml"
    (
        cd "$ep"
        git init -q . 2>/dev/null || true
        # E1: one action at a time (so that the engine's queue is empty), then each task's phases from the run
        # record; that run also fills the engine's action cache and the local cache E2 compares with.
        sed -i.bak 's/^url = .*/&\njobs = 1/' tasks.toml
        CAIRN_CACHE_DIR="$work/e1" "$cairn" run all --force --progress plain >/dev/null 2>&1
        python3 - "$ep/.cairn/runs" <<'PY'
import json, pathlib, statistics, sys
record = json.loads(sorted(pathlib.Path(sys.argv[1]).glob("*.json"))[-1].read_text())
client, engine, worker = [], [], []
for task in record["tasks"]:
    if task.get("ran_on") != "remote":
        continue
    phases = {p["name"]: p["duration_ms"] for p in task["phases"]}
    # cairn's side: building the action, the uploads, the downloads and the local store.
    client.append(sum(phases.get(k, 0.0) for k in
                      ("remote prepare", "remote upload", "remote download", "cache store")))
    # The engine's side beyond the command: from Execute to its answer, minus its worker's time.
    engine.append(phases.get("remote queue", 0.0) + phases.get("remote execute", 0.0)
                  - phases.get("remote worker", 0.0))
    worker.append(phases.get("remote worker", 0.0))
med = statistics.median
names = ("remote prepare", "remote upload", "remote download", "cache store")
per_phase = {n: med([{p["name"]: p["duration_ms"] for p in t["phases"]}.get(n, 0.0)
                     for t in record["tasks"] if t.get("ran_on") == "remote"]) for n in names}
print("E1 phases, medians: " + ", ".join(f"{n} {v:.2f} ms" for n, v in per_phase.items()))
print(f"E1 {len(client)} remote actions, one at a time: cairn's side per action, median {med(client):.2f} ms; "
      f"the engine's beyond its worker, median {med(engine):.2f} ms; the worker (sandbox and command), "
      f"median {med(worker):.2f} ms")
PY
        e1_record=$(find "$ep/.cairn/runs" -name '*.json' | sort | tail -n 1)
        mv tasks.toml.bak tasks.toml
        # E2 next, before anything deletes files: ext4 skips inodes freed in the last minutes when it allocates
        # new ones (`recently_deleted` was half of a run's CPU in perf after a mass delete), which would charge
        # this script's deletions to whichever command creates the most files next. So each E2 run gets a cache
        # directory never used before, and the outputs are moved aside rather than deleted.
        mkdir -p "$work/e2" "$work/aside"
        hyperfine --runs "$runs" --style basic --export-markdown "$work/e2.md" \
            --prepare "mv out $work/aside/\$(date +%s%N) 2>/dev/null || true" \
            -n "E2 engine action-cache hits" "CAIRN_CACHE_DIR=$work/e2/\$(date +%s%N) $cairn run all --progress plain" \
            --prepare "mv out $work/aside/\$(date +%s%N) 2>/dev/null || true" \
            -n "E2 local hits" "CAIRN_CACHE_DIR=$work/e1 $cairn run all --progress plain"
        # The same two interleaved, one run of each in turn, medians compared: the disk's latency drifts between
        # hyperfine's blocks of runs by more than the distance to the goal (1.59-2.16 x over three runs).
        mkdir -p "$work/e2i-aside"
        python3 "$repo/benches/interleave.py" --wall \
            --prepare "mv out $work/aside/\$(date +%s%N) 2>/dev/null; mv $work/e2i $work/e2i-aside/\$(date +%s%N) 2>/dev/null; true" \
            "$((runs * 3))" "env CAIRN_CACHE_DIR=$work/e2i $cairn run all --progress plain" \
            "env CAIRN_CACHE_DIR=$work/e1 $cairn run all --progress plain" >"$work/e2i.txt"
        # The same tasks run here store their results too (more durably: blob, log and manifest fsynced), so the
        # store phase a local run pays is taken off the remote path's cost to give its overhead over a local run.
        CAIRN_CACHE_DIR="$work/e1-local" "$cairn" run all --force --remote-exec off --jobs 1 --progress plain >/dev/null 2>&1
        python3 - "$e1_record" "$ep/.cairn/runs" <<'PY'
import json, pathlib, statistics, sys
remote = json.loads(pathlib.Path(sys.argv[1]).read_text())
local = json.loads(sorted(pathlib.Path(sys.argv[2]).glob("*.json"))[-1].read_text())
def phase(record, name, where):
    return statistics.median({p["name"]: p["duration_ms"] for p in t["phases"]}.get(name, 0.0)
                             for t in record["tasks"] if t.get("ran_on") == where)
remote_side = sum(phase(remote, n, "remote") for n in
                  ("remote prepare", "remote upload", "remote download", "cache store"))
local_store = phase(local, "cache store", "local")
print(f"E1 the same tasks run here: cache store, median {local_store:.2f} ms; so the remote path costs "
      f"{remote_side - local_store:.2f} ms per action over a local run of the same command")
PY
        hyperfine --runs "$runs" --style basic --export-markdown "$work/e3.md" \
            --prepare "rm -rf out" \
            -n "E3 on the engine" "CAIRN_CACHE_DIR=$work/e3 $cairn run all --force --progress plain" \
            --prepare "rm -rf out" \
            -n "E3 here" "CAIRN_CACHE_DIR=$work/e3 $cairn run all --force --remote-exec off --progress plain"
    )
    kill "$casd_pid" 2>/dev/null || true
    cat "$work/e2.md" "$work/e3.md"
    echo "E2 interleaved (wall per run; the first line's ratio is the engine's hits over local hits):"
    cat "$work/e2i.txt"
}
if $only_engine; then
    engine_rows
    exit 0
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx/root/cairn/ac" "$work/nginx/root/cairn/cas" "$work/nginx/tmp"
chmod -R 0777 "$work/nginx/root" "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$port;
    location /cairn/ { root $work/nginx/root; dav_methods PUT; create_full_put_path on; client_max_body_size 0; }
  }
}
EOF
/usr/sbin/nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; rm -rf "$work"' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done

"$cairn" cache keygen --output "$work/ci.key" >"$work/keygen.txt"
public=$(sed -n 's/^public key: //p' "$work/keygen.txt")
project="$work/project"
mkdir -p "$project/src"
echo 'int main(void) { return 0; }' >"$project/src/main.c"
{
    printf '[remote_cache]\nurl = "http://127.0.0.1:%s/cairn"\ntrusted_writers = ["%s"]\n\n' "$port" "$public"
    for i in $(seq 1 "$tasks"); do
        printf '[tasks.t%s]\ninputs = ["src/**"]\noutputs = ["out/t%s.bin"]\nrun = "sleep 0.05; mkdir -p out; head -c 65536 /dev/urandom > out/t%s.bin"\n\n' "$i" "$i" "$i"
    done
    printf '[tasks.all]\ndeps = [%s]\n\n' "$(seq 1 "$tasks" | sed 's/.*/"t&"/' | paste -sd,)"
    printf '[tasks.many]\ninputs = ["src/**"]\noutputs = ["many/**"]\nrun = "sleep 0.5; mkdir -p many; for i in $(seq 1 500); do head -c 4096 /dev/urandom > many/f$i; done"\n'
} >"$project/tasks.toml"

cd "$project"
# The writer publishes once; every reader run below starts from an empty local cache.
CAIRN_CACHE_DIR="$work/writer" CAIRN_REMOTE_SIGNING_KEY_FILE="$work/ci.key" \
    "$cairn" run all many --remote read-write --progress plain >/dev/null 2>&1

# R1's fetches and R2's local hits side by side in one hyperfine, before anything else deletes files (as for E2:
# ext4 makes whoever creates the most files next pay for inodes freed in the last minutes): each fetch gets a
# never-used cache directory, and outputs are moved aside rather than deleted.
CAIRN_CACHE_DIR="$work/reader" "$cairn" run all >/dev/null 2>&1
mkdir -p "$work/fresh" "$work/aside"
aside="mv out $work/aside/\$(date +%s%N) 2>/dev/null || true"
hyperfine --runs "$runs" --style basic --export-markdown "$work/r1.md" \
    --prepare "$aside" \
    -n "R1 remote fetch" "CAIRN_CACHE_DIR=$work/fresh/\$(date +%s%N) $cairn run all --progress plain" \
    --prepare "$aside" \
    -n "R2 local hits" "CAIRN_CACHE_DIR=$work/reader $cairn run all --progress plain"
# And interleaved, as E2.
mkdir -p "$work/r1i-aside"
python3 "$repo/benches/interleave.py" --wall \
    --prepare "mv out $work/aside/\$(date +%s%N) 2>/dev/null; mv $work/r1i $work/r1i-aside/\$(date +%s%N) 2>/dev/null; true" \
    "$((runs * 3))" "env CAIRN_CACHE_DIR=$work/r1i $cairn run all --progress plain" \
    "env CAIRN_CACHE_DIR=$work/reader $cairn run all --progress plain" >"$work/r1i.txt"
hyperfine --runs "$runs" --style basic --export-markdown "$work/r2.md" \
    --prepare "rm -rf $work/none out" \
    -n "R1 run (no cache)" "CAIRN_CACHE_DIR=$work/none $cairn run all --no-cache --progress plain"
hyperfine --runs "$runs" --style basic --export-markdown "$work/r3.md" \
    --prepare "rm -rf $work/w out" \
    -n "R3 publishing" "CAIRN_CACHE_DIR=$work/w CAIRN_REMOTE_SIGNING_KEY_FILE=$work/ci.key $cairn run all --force --remote read-write --progress plain" \
    --prepare "rm -rf $work/w out" \
    -n "R3 local only" "CAIRN_CACHE_DIR=$work/w CAIRN_REMOTE_CACHE=off $cairn run all --force --progress plain"
hyperfine --runs "$runs" --style basic --export-markdown "$work/r4.md" \
    --prepare "rm -rf $work/reader many" \
    -n "R4 remote fetch, 500 files" "CAIRN_CACHE_DIR=$work/reader $cairn run many --progress plain" \
    --prepare "rm -rf $work/none many" \
    -n "R4 run (no cache)" "CAIRN_CACHE_DIR=$work/none $cairn run many --no-cache --progress plain"
cat "$work/r1.md" "$work/r2.md" "$work/r3.md" "$work/r4.md"
echo "R1/R2 interleaved (wall per run; the first line's ratio is the remote fetches over local hits):"
cat "$work/r1i.txt"
engine_rows
