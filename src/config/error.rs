//! Everything that can be wrong with a tasks.toml, each with the span of what the user wrote.

use std::io;
use std::path::PathBuf;

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use super::source::SourceFile;

/// A problem found while reading or validating a tasks.toml.
#[derive(Debug, Error, Diagnostic)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(code(cairn::config::read))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// No tasks.toml was found walking up from the working directory.
    #[error("no tasks.toml in `{start}` or any directory above it")]
    #[diagnostic(
        code(cairn::config::not_found),
        help("create a tasks.toml with a [tasks.NAME] table, or point at one with `-f PATH`")
    )]
    NotFound {
        /// Where the search started.
        start: PathBuf,
    },

    /// The text is not valid TOML.
    #[error("invalid TOML: {message}")]
    #[diagnostic(code(cairn::config::syntax))]
    Syntax {
        /// The parser's description.
        message: String,
        #[source_code]
        src: SourceFile,
        #[label("here")]
        span: SourceSpan,
    },

    /// A key that cairn does not know.
    #[error("unknown key `{key}` in {context}")]
    #[diagnostic(code(cairn::config::unknown_key))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Which table it is in.
        context: String,
        #[source_code]
        src: SourceFile,
        #[label("not a key of {context}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A value of the wrong TOML type.
    #[error("`{key}` must be {expected}, found {found}")]
    #[diagnostic(code(cairn::config::wrong_type))]
    WrongType {
        /// The key whose value is wrong.
        key: String,
        /// What it should be.
        expected: &'static str,
        /// What it is.
        found: &'static str,
        #[source_code]
        src: SourceFile,
        #[label("expected {expected}")]
        span: SourceSpan,
    },

    /// A value of the right type that still makes no sense.
    #[error("invalid `{key}`: {reason}")]
    #[diagnostic(code(cairn::config::invalid_value))]
    InvalidValue {
        /// The key whose value is wrong.
        key: String,
        /// Why.
        reason: String,
        #[source_code]
        src: SourceFile,
        #[label("{reason}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A `{{name}}` that is neither a var nor a param of the task.
    #[error("unknown name `{name}` in {context}")]
    #[diagnostic(code(cairn::config::unknown_name))]
    UnknownName {
        /// The name inside the braces.
        name: String,
        /// Where it is used.
        context: String,
        #[source_code]
        src: SourceFile,
        #[label("not a var or a param of this task")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A `{{NAME}}` naming a secret: secrets never go on a command line.
    #[error("`{{{{{name}}}}}` in {context} would put a secret on the command line")]
    #[diagnostic(
        code(cairn::config::secret_in_command),
        help("command lines are visible to every user in `ps` and end up in logs; the task gets it in its environment: write `${name}` instead")
    )]
    SecretInCommand {
        /// The secret's variable.
        name: String,
        /// Where it is used.
        context: String,
        #[source_code]
        src: SourceFile,
        #[label("a secret")]
        span: SourceSpan,
    },

    /// A malformed `{{…}}`.
    #[error("invalid interpolation in {context}: {reason}")]
    #[diagnostic(code(cairn::config::template))]
    Template {
        /// Where it is used.
        context: String,
        /// What is wrong.
        reason: String,
        #[source_code]
        src: SourceFile,
        #[label("{reason}")]
        span: SourceSpan,
    },

    /// A data file named by tasks.toml (`from = "…"`) holds something other than what the task needs.
    #[error("{message}")]
    #[diagnostic(code(cairn::config::data_file))]
    DataFile {
        /// What is wrong.
        message: String,
        #[source_code]
        src: SourceFile,
        #[label("here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// Several problems, reported together so one edit fixes them all.
    #[error("{count} problems in `{file}`")]
    #[diagnostic(code(cairn::config::many))]
    Many {
        /// How many.
        count: usize,
        /// The file's name.
        file: String,
        #[related]
        errors: Vec<ConfigError>,
    },
}

impl ConfigError {
    /// Folds a list of problems into one error (the list must not be empty).
    pub fn collect(file: &str, mut errors: Vec<ConfigError>) -> ConfigError {
        if errors.len() == 1 {
            errors.pop().expect("length checked")
        } else {
            ConfigError::Many {
                count: errors.len(),
                file: file.to_owned(),
                errors,
            }
        }
    }
}
