//! What a remote cache server returns: an envelope (checked against a trusted writer) and a manifest (checked
//! path by path before anything is downloaded). Any bytes are refused or accepted, never a panic.
#![no_main]

use cairn::cache::remote::{check_manifest, trust};
use cairn::config::TrustedWriter;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fuzz_target!(|data: &[u8]| {
    let writer = TrustedWriter {
        name: "ci".into(),
        key: [7; 32],
        span: 0..0,
    };
    let _ = trust::open(data, &writer);
    let _ = check_manifest(data, KEY, &|path| path.starts_with("out/"));
});
