//! A client of Bazel's Remote Execution API v2 (REAPI): the content-addressable storage, the action cache,
//! execution and capabilities, over gRPC (tonic, rustls). Engines that speak it — BuildBuddy, Buildbarn,
//! NativeLink, EngFlow, BuildGrid, buildbox-casd — run cairn's tasks (the run module's remote path) and hold
//! its results (the remote cache with a `grpc://` URL).
//!
//! The client owns a small tokio runtime on a thread of its own, so that it serves the scheduler's async code
//! and the cache's blocking code alike, and its connections outlive neither.

mod client;
pub mod tree;

pub use client::{Client, Endpoint, Finished, Limits, Operation};

/// The REAPI messages, under shorter names.
pub mod proto {
    pub use bazel_remote_apis::build::bazel::remote::execution::v2::*;
    pub use bazel_remote_apis::google::rpc::Status as RpcStatus;
}

/// Why a REAPI call failed.
#[derive(Debug, thiserror::Error)]
pub enum ReapiError {
    /// The URL cannot be used.
    #[error("`{url}` is not a REAPI endpoint: {reason}")]
    BadUrl {
        /// The URL as given (without credentials).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered a call with an error status.
    #[error("{call}: {code:?}: {message}")]
    Status {
        /// The RPC.
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// An input could not be read for upload.
    #[error("input `{path}`: {reason}")]
    Input {
        /// Relative to the repository root.
        path: String,
        /// Why.
        reason: String,
    },
    /// The server's answer breaks the protocol (a blob that does not match its digest, a missing field).
    #[error("the server's answer is not usable: {0}")]
    Protocol(String),
    /// The server cannot serve this client (it does not execute, or not with SHA-256).
    #[error("{0}")]
    Unsupported(String),
    /// The client's thread is gone (cairn is shutting down).
    #[error("the REAPI client has stopped")]
    Stopped,
}

impl ReapiError {
    /// Whether the engine as a whole is unusable (down, refusing this client, out of quota, not an engine),
    /// as opposed to one action or input going wrong: remote execution is then off for the rest of the run.
    pub fn is_engine_down(&self) -> bool {
        match self {
            ReapiError::BadUrl { .. } | ReapiError::Unsupported(_) | ReapiError::Stopped => true,
            ReapiError::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Unimplemented
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ),
            ReapiError::Input { .. } | ReapiError::Protocol(_) => false,
        }
    }

    fn status(call: &'static str, status: tonic::Status) -> ReapiError {
        ReapiError::Status {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
