//! The Extism host cairn runs plugins with, in the `cairn-plugin-host` process (one per plugin). Everything a
//! plugin may do is granted here, per plugin: no filesystem, no WASI, no environment, no clock and no network
//! unless `tasks.toml` grants them; every call is bounded in time, memory and (optionally) fuel; and the only
//! network access is cairn's own HTTP function, which checks host *and* port and never follows a redirect.
//! The types cairn shares with it (and the client cairn runs it with) are in `cairn-plugin-client`.

mod http;
pub mod runtime;
pub mod serve;

pub use cairn_plugin_client::{
    compile_cache_config, Grants, HostError, HostPort, Limits, Sink, Spec, DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
};
