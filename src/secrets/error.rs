//! What can go wrong with secrets files, the policy and identities.

use std::path::PathBuf;

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::config::SourceFile;

/// A problem with the contents of one secrets file. Messages never quote a value: the file may be plaintext.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The text does not parse as its format.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// An `ENC[…]` value is malformed.
    #[error("malformed encrypted value: {0}")]
    BadValue(String),
    /// A value or comment failed authentication.
    #[error(
        "a value does not decrypt with this file's data key (it was edited, moved or damaged)"
    )]
    Crypto,
    /// The value at a path failed authentication.
    #[error(
        "the value at `{path}` was altered: it does not authenticate with this file's data key"
    )]
    Tampered {
        /// The value's path.
        path: String,
    },
    /// The MAC over the values does not match.
    #[error("the MAC does not match the values: a value was added, removed, edited or reordered outside sops/cairn")]
    MacMismatch,
    /// The operating system's random source failed.
    #[error("the system's random number generator failed")]
    Random,
    /// The file has no `sops` metadata.
    #[error("this file is not encrypted (it has no `sops` metadata)")]
    NotEncrypted,
    /// The file is already encrypted where plaintext was expected.
    #[error("this file is already encrypted")]
    AlreadyEncrypted,
    /// A SOPS feature cairn does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The document's shape does not fit the format.
    #[error("{0}")]
    Shape(String),
    /// An age operation failed.
    #[error("age: {0}")]
    Age(String),
}

/// A secrets operation that failed, naming the file it concerns.
#[derive(Debug, Error, Diagnostic)]
pub enum SecretsError {
    /// A file's contents are wrong.
    #[error("{path}: {problem}")]
    #[diagnostic(code(cairn::secrets::format))]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: FormatError,
        /// How to fix it, when cairn can tell.
        #[help]
        help: Option<String>,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {error}")]
    #[diagnostic(code(cairn::secrets::io))]
    Io {
        /// `read`, `write`, …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// None of the identities found opens the file.
    #[error("{path}: none of your age identities is a recipient of this file")]
    #[diagnostic(code(cairn::secrets::no_identity))]
    NoIdentity {
        /// The file.
        path: PathBuf,
        /// What was tried, and the recipients the file has.
        #[help]
        help: String,
    },
    /// `.sops.yaml` is missing or wrong.
    #[error("{message}")]
    #[diagnostic(code(cairn::secrets::policy))]
    Policy {
        /// What is wrong.
        message: String,
        /// The file's text, when the problem has a place in it.
        #[source_code]
        src: Option<SourceFile>,
        /// Where.
        #[label("here")]
        span: Option<SourceSpan>,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// No creation rule matches a file.
    #[error("no creation rule in `{config}` matches `{path}`")]
    #[diagnostic(
        code(cairn::secrets::no_rule),
        help("add a rule whose `path_regex` matches it, or move the file under a directory that has one (there is deliberately no catch-all)")
    )]
    NoRule {
        /// The secrets file, relative to the policy's directory.
        path: String,
        /// The policy file.
        config: PathBuf,
    },
    /// A key the user asked for is not in the file.
    #[error("{path}: no value at `{key}`")]
    #[diagnostic(code(cairn::secrets::no_key))]
    NoKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The keys the file has.
        #[help]
        help: Option<String>,
    },
    /// Something the user asked for cannot be done as asked.
    #[error("{message}")]
    #[diagnostic(code(cairn::secrets::usage))]
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// A rotation was interrupted and must be resumed or abandoned first.
    #[error("an interrupted rotation is pending (journal `{journal}`)")]
    #[diagnostic(
        code(cairn::secrets::rotation_pending),
        help("run `cairn secrets rotate --resume` to finish it, or `cairn secrets rotate --abort` to keep the old files")
    )]
    RotationPending {
        /// The journal's path.
        journal: PathBuf,
    },
}

impl SecretsError {
    /// A format error about `path`.
    pub fn format(path: impl Into<PathBuf>, problem: FormatError) -> SecretsError {
        let help = match &problem {
            FormatError::MacMismatch | FormatError::Tampered { .. } | FormatError::Crypto => Some(
                "restore the file from git (`git checkout -- FILE`); never edit encrypted values by hand, use `cairn secrets edit`".into(),
            ),
            _ => None,
        };
        SecretsError::Format {
            path: path.into(),
            problem,
            help,
        }
    }

    /// An I/O error.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> SecretsError {
        SecretsError::Io {
            action,
            path: path.into(),
            error,
        }
    }

    /// A usage error with a hint.
    pub fn usage(message: impl Into<String>, help: Option<String>) -> SecretsError {
        SecretsError::Usage {
            message: message.into(),
            help,
        }
    }
}
