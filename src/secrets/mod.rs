//! Secrets: SOPS-compatible files encrypted to age recipients, the `.sops.yaml` policy, identities,
//! injection into tasks and redaction of their output.

pub mod cipher;
pub mod error;
pub mod tree;
pub mod yaml;

pub use error::{FormatError, SecretsError};
pub mod dotenv;
pub mod file;
pub mod files;
pub mod json;
pub mod keys;
pub mod policy;
pub mod redact;
pub mod rotate;
pub mod scan;
