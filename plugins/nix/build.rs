//! A larger stack for the WebAssembly build: rnix parses and this crate checks by recursion, and deeply nested
//! files that Nix accepts (thousands of nested lists or a long `a + b + …` chain) overflowed wasm's default
//! 1 MiB stack, which traps the plugin. The stack lives in the plugin's linear memory, within `limits.memory`.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size={}", 16 << 20);
    }
    println!("cargo:rerun-if-changed=build.rs");
}
