#!/usr/bin/env bash
# Builds every plugin under plugins/ for wasm32 and writes the modules to plugins/dist/NAME.wasm.
#
# A plugin is a directory with a Cargo.toml whose crate-type is cdylib (plugins/NAME or plugins/examples/NAME).
# With rustup's wasm32-unknown-unknown target installed (an author's ordinary machine) the normal toolchain is
# used. Otherwise Debian's rustc-web (1.96) builds the standard library from its source (-Zbuild-std); that
# needs rustc, cargo, the library source and rust-lld from the *same* Debian release, installed here when
# missing. Usage: plugins/build.sh [NAME…]   (CAIRN_PLUGIN_DIST and CAIRN_PLUGIN_TARGET_DIR override paths)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dist="${CAIRN_PLUGIN_DIST:-$here/dist}"
target_dir="${CAIRN_PLUGIN_TARGET_DIR:-$HOME/.cache/cairn/plugins-target}"
target=wasm32-unknown-unknown
mkdir -p "$dist" "$target_dir"

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    cargo=(cargo)
    build_std=()
    echo "plugins: using rustup's $target target"
else
    need=()
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q . || need+=(rustc-web)
    [ -x /usr/bin/cargo ] || need+=(cargo-web)
    [ -d /usr/lib/rustlib/src/rust/library ] || need+=(rust-web-src)
    command -v rust-lld >/dev/null 2>&1 || [ -x /usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld ] || need+=(rust-web-llvm lld-22)
    if [ "${#need[@]}" -gt 0 ]; then
        echo "plugins: installing ${need[*]} (Debian's Rust for wasm32)"
        sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            rustc-web cargo-web rust-web-src rust-web-llvm lld-22
    fi
    # rustup's shims in ~/.cargo/bin would shadow Debian's compiler: name it explicitly.
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    # Scoped to these builds: it lets a stable compiler build its own standard library.
    export RUSTC_BOOTSTRAP=1
    cargo=(/usr/bin/cargo)
    build_std=(-Zbuild-std=std,panic_abort)
    echo "plugins: using Debian's $(/usr/bin/rustc --version) with -Zbuild-std"
fi

# Every directory below plugins/ with a cdylib crate, except the host, the API and the kit.
# (A read loop rather than `mapfile`: macOS ships bash 3.2.)
crates=()
while IFS= read -r manifest; do crates+=("$manifest"); done < <(find "$here" -name Cargo.toml \
    -not -path '*/target/*' -not -path "$here/host/*" -not -path "$here/api/*" -not -path "$here/pdk/*" \
    -not -path "$here/client/*" -print0 | xargs -0 grep -l 'cdylib' | sort)
size() { wc -c < "$1" | tr -d ' '; }
sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1"; else shasum -a 256 "$1"; fi; }
wanted=("$@")
built=0
for manifest in "${crates[@]}"; do
    name="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1)"
    if [ "${#wanted[@]}" -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    echo "plugins: building $name"
    locked=()
    [ -f "$(dirname "$manifest")/Cargo.lock" ] && locked=(--locked)
    CARGO_TARGET_DIR="$target_dir" "${cargo[@]}" build --quiet --release ${locked[@]+"${locked[@]}"} --target "$target" \
        ${build_std[@]+"${build_std[@]}"} --manifest-path "$manifest"
    artifact="$target_dir/$target/release/${name//-/_}.wasm"
    cp "$artifact" "$dist/$name.wasm.tmp"
    mv "$dist/$name.wasm.tmp" "$dist/$name.wasm"
    echo "plugins: $dist/$name.wasm ($(size "$dist/$name.wasm") bytes, sha256 $(sha256 "$dist/$name.wasm" | cut -c1-16)…)"
    built=$((built + 1))
done
# Plugins in other languages: a directory with a package.json whose `build` script writes dist/NAME.wasm
# (AssemblyScript's compiler and Extism's PDK come from npm, pinned by its package-lock.json).
packages=()
while IFS= read -r package; do packages+=("$package"); done < <(find "$here" -name package.json \
    -not -path '*/node_modules/*' -not -path '*/target/*' | sort)
for package in "${packages[@]}"; do
    dir="$(dirname "$package")"
    name="$(sed -n 's/^ *"name": *"\(.*\)",*$/\1/p' "$package" | head -1)"
    if [ "${#wanted[@]}" -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "plugins: skipping $name: it is built with npm, which is not installed" >&2
        continue
    fi
    echo "plugins: building $name (npm)"
    (cd "$dir" && npm ci --no-audit --no-fund --silent && npm run --silent build >/dev/null)
    cp "$dir/dist/$name.wasm" "$dist/$name.wasm.tmp"
    mv "$dist/$name.wasm.tmp" "$dist/$name.wasm"
    echo "plugins: $dist/$name.wasm ($(size "$dist/$name.wasm") bytes)"
    built=$((built + 1))
done
if [ "$built" -eq 0 ]; then
    echo "plugins: nothing to build${wanted[*]:+ named ${wanted[*]}}" >&2
    exit 1
fi
