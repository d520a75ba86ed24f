//! `.sops.yaml`: any text gives a policy or an error naming the file, never a panic.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = cairn::secrets::policy::Policy::parse(
        Path::new("/nonexistent/.sops.yaml"),
        PathBuf::from("/nonexistent"),
        text,
    );
});
