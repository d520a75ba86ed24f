//! The tasks.toml loader and the graph built from what it accepts: any text gives a config or diagnostics,
//! never a panic, and a config that loads builds a graph or reports why not.
#![no_main]

use std::path::PathBuf;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // A root that does not exist: data files named by `from` are reported as missing, never read.
    let root = PathBuf::from("/nonexistent/cairn-fuzz");
    if let Ok(config) =
        cairn::config::Config::parse("tasks.toml", text, root.join("tasks.toml"), root)
    {
        let _ = cairn::graph::TaskGraph::build(Arc::new(config));
    }
});
