//! cairn's plugin host: cairn starts one per plugin and speaks to it over its stdin and stdout. It is the only
//! executable that loads wasmtime, so a run that uses no plugin never pays for it.

fn main() -> std::process::ExitCode {
    cairn_plugin_host::serve::main()
}
