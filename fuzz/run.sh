#!/usr/bin/env bash
# Seeds each fuzz target's corpus from the repository's own files and test vectors, then fuzzes each target for
# SECONDS (default 60). Crashes land in fuzz/artifacts/TARGET/; each becomes a regression test beside the code.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); works with the stable toolchain through
# RUSTC_BOOTSTRAP, without sanitizers.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(tasks_toml sops_file sops_policy remote_entry)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CAIRN_FUZZ_TARGET_DIR:-$HOME/.cache/cairn/fuzz-target}"

seed() {
    local target=$1
    mkdir -p "corpus/$target"
    case "$target" in
    tasks_toml)
        cp ../tasks.toml corpus/tasks_toml/repository.toml
        # Every tasks.toml example in the guides.
        awk '/^```toml/{n++; f=1; next} /^```/{f=0} f{print > ("corpus/tasks_toml/doc-" n ".toml")}' ../docs/*.md ../README.md
        ;;
    sops_file)
        local pick file
        while IFS= read -r file; do
            case "$file" in *.json) pick='\x01' ;; *.env) pick='\x02' ;; *) pick='\x00' ;; esac
            { printf "$pick"; cat "$file"; } > "corpus/sops_file/$(echo "$file" | tr '/' '_')"
        done < <(find ../tests/vectors/sops/enc ../tests/vectors/sops/plain ../secrets -type f \( -name '*.yaml' -o -name '*.json' -o -name '*.env' \))
        ;;
    sops_policy)
        cp ../.sops.yaml corpus/sops_policy/repository.yaml
        ;;
    remote_entry)
        local zero
        zero=$(printf '0%.0s' $(seq 64))
        printf '{"key":"%s","task":"build","created":1,"duration_ms":2,"outputs":[{"path":"out/a","blob":{"sha256":"%s","blake3":"%s","size":1,"stored_size":1,"zstd":false},"target":null,"mode":420},{"path":"out/l","blob":null,"target":"a","mode":511}],"log":null}' \
            "$zero" "$zero" "$zero" > corpus/remote_entry/manifest.json
        printf '{"format":"cairn-remote-entry/1","writer":"ed25519:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","manifest":"e30=","signature":"AAAA"}' \
            > corpus/remote_entry/envelope.json
        ;;
    esac
}

for target in "${targets[@]}"; do
    seed "$target"
    echo "== fuzzing $target for ${seconds}s"
    cargo fuzz run --sanitizer none -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done
