//! The SOPS file readers: the first byte picks YAML, JSON or dotenv, the rest is the file. Any text gives a
//! parsed file or a format error, never a panic or unbounded memory.
#![no_main]

use cairn::secrets::file::{Format, SopsFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match pick % 3 {
        0 => Format::Yaml,
        1 => Format::Json,
        _ => Format::Dotenv,
    };
    let _ = format.parse(text);
    let _ = SopsFile::parse(format, text);
});
