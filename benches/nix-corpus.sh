#!/usr/bin/env bash
# How closely the nix plugin agrees with Nix: every .nix file of the given git repositories (at their checked-out
# commit) and seeded mutations of a sample of them, each checked by `nix-instantiate --parse` and by cairn's
# `validate` task with the plugin, compared file by file: ok-vs-error verdicts, and the first error's line:column
# where both report one. Needs Nix (`.ci/run` installs it) and plugins/dist/nix.wasm (plugins/build.sh).
#
# Usage: bash benches/nix-corpus.sh [--seed N] GIT_DIR...
#   e.g. bash benches/nix-corpus.sh /work/.mirror/LnL7+nix-darwin/repo /work/.mirror/nix-community+home-manager/repo
# The corpus is regenerated from the repositories each run (nothing is shipped); the same commits and seed give
# the same files and the same mutants.
set -euo pipefail
cd "$(dirname "$0")/.."
seed=1
sources=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) seed="$2"; shift 2 ;;
        *) sources+=("$1"); shift ;;
    esac
done
[ "${#sources[@]}" -gt 0 ] || { echo "usage: bash benches/nix-corpus.sh [--seed N] GIT_DIR..." >&2; exit 2; }
command -v nix-instantiate >/dev/null || { echo "nix-instantiate is missing (.ci/run installs Nix)" >&2; exit 2; }
[ -f plugins/dist/nix.wasm ] || plugins/build.sh nix
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q --bin cairn --bin cairn-plugin-host
cairn="$CARGO_TARGET_DIR/release/cairn"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus="$work/project/corpus"
mkdir -p "$corpus"
for source in "${sources[@]}"; do
    # A mirror is OWNER+NAME/repo (bare); a clone has its .git inside.
    name=$(basename "$source")
    [ "$name" = repo ] && name=$(basename "$(dirname "$source")")
    git_dir="$source"
    [ -d "$source/.git" ] && git_dir="$source/.git"
    echo "corpus: $name at $(git --git-dir="$git_dir" rev-parse --short HEAD)"
    mkdir -p "$corpus/$name"
    git --git-dir="$git_dir" archive HEAD | tar -x -C "$corpus/$name" --wildcards '*.nix' 2>/dev/null || true
done

# Seeded mutants of every 7th file: the mistakes people make.
python3 - "$corpus" "$seed" <<'PY'
import pathlib, random, sys
corpus, seed = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
files = sorted(p for p in corpus.rglob("*.nix") if p.is_file())
out = corpus / "_mutants"
out.mkdir()
def mutate(text, kind):
    if kind == "closer":
        i = max(text.rfind("}"), text.rfind("]"), text.rfind(")"))
        return None if i < 0 else text[:i] + text[i + 1:]
    if kind == "stray-equals":
        i = rng.randrange(len(text) + 1)
        return text[:i] + " = " + text[i:]
    if kind == "truncated":
        return text[: len(text) // 2]
    if kind == "unterminated":
        i = text.find('"')
        return None if i < 0 else text[: i + 1]  + text[i + 1:].replace('"', "", 1)
    if kind == "duplicate":
        lines = text.split("\n")
        candidates = [n for n, l in enumerate(lines) if " = " in l and l.rstrip().endswith(";")]
        if not candidates:
            return None
        n = rng.choice(candidates)
        return "\n".join(lines[: n + 1] + [lines[n]] + lines[n + 1:])
    if kind == "unbound":
        return text.replace(" = ", " = cairnUnboundName + ", 1) if " = " in text else None
kinds = ["closer", "stray-equals", "truncated", "unterminated", "duplicate", "unbound"]
made = 0
for n, path in enumerate(files[::7]):
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        continue
    kind = kinds[n % len(kinds)]
    mutated = mutate(text, kind)
    if mutated is None or mutated == text:
        continue
    (out / f"{n:05d}-{kind}.nix").write_text(mutated)
    made += 1
print(f"corpus: {len(files)} files, {made} mutants (seed {seed})")
PY

# What Nix says of each file: "ok", or "L:C message" of its error.
(cd "$corpus" && find . -name '*.nix' -type f -print0 | sort -z | xargs -0 -P2 -n 50 sh -c '
    for f; do
        out=$(nix-instantiate --parse "$f" 2>&1 >/dev/null | grep -v "^warning:")
        if [ -z "$out" ]; then
            printf "%s\tok\n" "$f"
        else
            pos=$(printf "%s\n" "$out" | sed -n "s/^ *at .*:\([0-9]*\):\([0-9]*\):$/\1:\2/p" | head -1)
            msg=$(printf "%s\n" "$out" | sed -n "s/^error: //p" | head -1)
            printf "%s\t%s %s\n" "$f" "${pos:--}" "$msg"
        fi
    done' sh) > "$work/nix.tsv"

# What the plugin says, through a real run of cairn.
cp plugins/dist/nix.wasm "$work/project/nix.wasm"
{
    printf '[plugins.nix]\nsource = "nix.wasm"\nsha256 = "%s"\nlimits = { timeout = "300s", memory = "1GiB" }\n\n' \
        "$(sha256sum plugins/dist/nix.wasm | cut -d" " -f1)"
    printf '[tasks.validate]\nplugin = "nix"\ninputs = ["corpus/**/*.nix"]\n'
} > "$work/project/tasks.toml"
started=$(date +%s.%N)
(cd "$work/project" && CAIRN_CACHE_DIR="$work/cache" "$cairn" run validate --no-cache --progress plain \
    > "$work/cairn.out" 2> "$work/cairn.err") || true
ended=$(date +%s.%N)

# Formatting: the plugin with `format = true` against nixpkgs-fmt's own `--check`, on the files Nix parses.
nixpkgs_fmt="${NIXPKGS_FMT:-$(command -v nixpkgs-fmt || true)}"
if [ -n "$nixpkgs_fmt" ]; then
    sed -i 's/^\[plugins.nix\]$/[plugins.nix]\nconfig = { format = true }/' "$work/project/tasks.toml"
    (cd "$work/project" && CAIRN_CACHE_DIR="$work/cache" "$cairn" run validate --no-cache --progress plain \
        > /dev/null 2> "$work/format.err") || true
    (cd "$corpus" && grep -P '\tok$' "$work/nix.tsv" | cut -f1 | tr '\n' '\0' \
        | xargs -0 -n 200 "$nixpkgs_fmt" --check 2>/dev/null | grep '\.nix$' || true) > "$work/format.nixpkgs-fmt"
fi

python3 - "$work" "$started" "$ended" <<'PY'
import pathlib, re, sys
work, started, ended = pathlib.Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
nix = {}
for line in (work / "nix.tsv").read_text().splitlines():
    path, verdict = line.split("\t", 1)
    nix[path.removeprefix("./")] = verdict
plugin = {}
crashed = [l for l in (work / "cairn.err").read_text().splitlines() if "crashed" in l or "was stopped" in l]
for line in (work / "cairn.err").read_text().splitlines():
    m = re.match(r"corpus/(.+?):(\d+):(\d+): (error|warning): (.*)", line)
    if m and m.group(4) == "error":
        plugin.setdefault(m.group(1), f"{m.group(2)}:{m.group(3)} {m.group(5)}")
def split(files):
    real = [f for f in files if not f.startswith("_mutants/")]
    return real, [f for f in files if f.startswith("_mutants/")]
real, mutants = split(sorted(nix))
def stats(files, label):
    agree = sum((nix[f] == "ok") == (f not in plugin) for f in files)
    false_pos = [f for f in files if nix[f] == "ok" and f in plugin]
    missed = [f for f in files if nix[f] != "ok" and f not in plugin]
    both = [f for f in files if nix[f] != "ok" and f in plugin]
    exact = sum(nix[f].split(" ", 1)[0] == plugin[f].split(" ", 1)[0] for f in both)
    print(f"{label}: {len(files)} files; verdicts agree on {agree} ({100 * agree / max(len(files), 1):.2f} %); "
          f"false positives {len(false_pos)}; missed errors {len(missed)}; "
          f"first-error position exact on {exact} of {len(both)} ({100 * exact / max(len(both), 1):.1f} %)")
    for f in false_pos[:15]:
        print(f"  false positive {f}: plugin says {plugin[f]}")
    for f in missed[:8]:
        print(f"  missed {f}: nix says {nix[f]}")
    for f in [f for f in both if nix[f].split(' ', 1)[0] != plugin[f].split(' ', 1)[0]][:8]:
        print(f"  position {f}: nix {nix[f]} | plugin {plugin[f]}")
stats(real, "real files")
stats(mutants, "mutants")
print(f"plugin crashes or timeouts: {len(crashed)}")
for line in crashed[:5]:
    print("  " + line)
fmt_plugin_file = work / "format.err"
if fmt_plugin_file.exists():
    ok_files = {f for f, v in nix.items() if v == "ok"}
    by_plugin = set()
    for line in fmt_plugin_file.read_text().splitlines():
        m = re.match(r"corpus/(.+?):\d+:\d+: error: not formatted as nixpkgs-fmt formats it", line)
        if m:
            by_plugin.add(m.group(1))
    by_tool = {l.strip().removeprefix("./") for l in (work / "format.nixpkgs-fmt").read_text().splitlines() if l.strip()}
    same = sum((f in by_plugin) == (f in by_tool) for f in ok_files)
    print(f"formatting verdicts equal to nixpkgs-fmt --check on {same} of {len(ok_files)} files that parse "
          f"({len(by_tool)} not formatted)")
    for f in sorted((by_plugin ^ by_tool) & ok_files)[:8]:
        print(f"  differs {f}: plugin {'flags' if f in by_plugin else 'passes'} it")
else:
    print("formatting: not compared (install nixpkgs-fmt 1.3: cargo install nixpkgs-fmt --version 1.3.0)")
seconds = ended - started
print(f"cold validate over {len(nix)} files: {seconds:.2f} s ({len(nix) / seconds:.0f} files/s, 2 cores)")
PY
