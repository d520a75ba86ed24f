//! What cairn and its plugin-host process say to each other over the host's stdin and stdout: frames of a
//! JSON header and a run of raw bytes (a module, a request, a reply), each preceded by its length.
//!
//! One host process runs one plugin and answers one request at a time, so the protocol needs no request ids:
//! cairn writes a request, then reads log frames until the answer.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use cairn_plugin_api::{Describe, LogLevel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Grants, HostError, Limits};

/// A header larger than this is not something cairn or the host wrote.
const MAX_HEADER: usize = 64 << 20;
/// Outputs are bounded by the plugin's memory limit (at most 4 GiB of linear memory).
const MAX_PAYLOAD: usize = 4 << 30;

/// What cairn asks of the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToHost {
    /// Compile and instantiate the module in the payload, then describe it.
    Load(LoadRequest),
    /// Call `export` with the payload as its input.
    Call {
        /// The export to call.
        export: String,
    },
}

/// [`crate::Spec`] without the module's bytes, which travel as the payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadRequest {
    /// Its name in `tasks.toml`.
    pub name: String,
    /// `config`, as strings.
    pub config: BTreeMap<String, String>,
    /// What it may do.
    pub grants: Grants,
    /// Bounds on each call.
    pub limits: Limits,
    /// Where compiled modules are cached, if anywhere.
    pub cache_dir: Option<PathBuf>,
}

/// What the host answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromHost {
    /// The plugin is loaded and said this about itself.
    Loaded {
        /// Its description.
        describe: Describe,
    },
    /// A log line the plugin (or its HTTP function) wrote during a call, not yet redacted.
    Log {
        /// Its level.
        level: LogLevel,
        /// The line.
        message: String,
    },
    /// The call returned; the payload is its output.
    Returned,
    /// Loading or the call failed; texts are not yet redacted.
    Failed {
        /// What failed.
        error: HostError,
    },
}

/// Writes one frame in a single write, so that a frame is never interleaved with another writer's.
pub fn write_frame(
    out: &mut impl Write,
    header: &impl Serialize,
    payload: &[u8],
) -> io::Result<()> {
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(16 + header.len() + payload.len());
    frame.extend_from_slice(&(header.len() as u64).to_le_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(payload);
    out.write_all(&frame)?;
    out.flush()
}

/// Reads one frame; `None` when the other side closed the pipe between frames.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<(T, Vec<u8>)>> {
    let mut length = [0u8; 8];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header = read_bytes(input, u64::from_le_bytes(length), MAX_HEADER)?;
    let header = serde_json::from_slice(&header)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    input.read_exact(&mut length)?;
    let payload = read_bytes(input, u64::from_le_bytes(length), MAX_PAYLOAD)?;
    Ok(Some((header, payload)))
}

fn read_bytes(input: &mut impl Read, length: u64, max: usize) -> io::Result<Vec<u8>> {
    let length = usize::try_from(length)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {length} bytes is larger than the protocol allows"),
            )
        })?;
    let mut bytes = vec![0u8; length];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_clean_close_reads_as_none() {
        let mut pipe = Vec::new();
        write_frame(
            &mut pipe,
            &ToHost::Call {
                export: "run_task".into(),
            },
            b"{\"x\":1}",
        )
        .unwrap();
        let mut reader = pipe.as_slice();
        let (header, payload): (ToHost, Vec<u8>) = read_frame(&mut reader).unwrap().unwrap();
        assert!(matches!(header, ToHost::Call { export } if export == "run_task"));
        assert_eq!(payload, b"{\"x\":1}");
        assert!(read_frame::<ToHost>(&mut reader).unwrap().is_none());
    }

    #[test]
    fn a_truncated_or_oversized_frame_is_an_error_not_an_allocation() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &FromHost::Returned, b"abcdef").unwrap();
        pipe.truncate(pipe.len() - 2);
        assert!(read_frame::<FromHost>(&mut pipe.as_slice()).is_err());
        let huge = u64::MAX.to_le_bytes();
        assert!(read_frame::<FromHost>(&mut huge.as_slice()).is_err());
    }
}
