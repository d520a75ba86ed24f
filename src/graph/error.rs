//! Problems with how tasks connect: unknown dependencies, bad param values, cycles and unknown targets.

use miette::{Diagnostic, LabeledSpan, SourceSpan};
use thiserror::Error;

use crate::config::SourceFile;

/// A problem found while connecting tasks into a graph.
#[derive(Debug, Error, Diagnostic)]
pub enum GraphError {
    /// A `deps` entry that names no task.
    #[error("task `{task}` depends on unknown task `{dep}`")]
    #[diagnostic(code(cairn::graph::unknown_dependency))]
    UnknownDependency {
        /// The dependent task instance.
        task: String,
        /// The dependency as rendered.
        dep: String,
        #[source_code]
        src: SourceFile,
        #[label("no task named `{dep}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A `deps` entry that gives a pattern task a value its param does not allow.
    #[error("task `{task}` depends on `{dep}`, but `{value}` is not a value of param `{param}`")]
    #[diagnostic(code(cairn::graph::param_value))]
    DependencyParamValue {
        /// The dependent task instance.
        task: String,
        /// The dependency as rendered.
        dep: String,
        /// The param.
        param: String,
        /// The value given.
        value: String,
        #[source_code]
        src: SourceFile,
        #[label("`{param}` does not allow `{value}`")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A matrix whose values could not be read.
    #[error("cannot fan out `{task}`: {message}")]
    #[diagnostic(code(cairn::graph::matrix))]
    Matrix {
        /// The task instance.
        task: String,
        /// What is wrong.
        message: String,
        #[source_code]
        src: SourceFile,
        #[label("the values come from here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// Tasks that depend on each other in a circle.
    #[error("dependency cycle: {cycle}")]
    #[diagnostic(
        code(cairn::graph::cycle),
        help("remove one of these dependencies to break the cycle")
    )]
    Cycle {
        /// The cycle, `a → b → a`.
        cycle: String,
        #[source_code]
        src: SourceFile,
        #[label(collection)]
        edges: Vec<LabeledSpan>,
    },

    /// A `deps` entry naming a service, which never finishes.
    #[error("task `{task}` depends on `{service}`, a service: it never finishes, so `{task}` would never start")]
    #[diagnostic(
        code(cairn::graph::depends_on_service),
        help("gather them in a group instead (`deps = [\"{service}\", \"{task}\"]` and no `run`), or drop `service = true`")
    )]
    DependsOnService {
        /// The dependent task instance.
        task: String,
        /// The service as named.
        service: String,
        #[source_code]
        src: SourceFile,
        #[label("a service")]
        span: SourceSpan,
    },

    /// A target on the command line that names no task.
    #[error("no task named `{target}`")]
    #[diagnostic(code(cairn::graph::unknown_target))]
    UnknownTarget {
        /// The target as given.
        target: String,
        #[help]
        help: Option<String>,
    },

    /// A target on the command line that gives a param a value it does not allow.
    #[error("`{value}` is not a value of param `{param}` of task `{task}`")]
    #[diagnostic(code(cairn::graph::target_param_value))]
    TargetParamValue {
        /// The pattern task.
        task: String,
        /// The param.
        param: String,
        /// The value given.
        value: String,
        #[help]
        help: Option<String>,
    },

    /// A target naming a pattern task without a value for a param that has no default.
    #[error("task `{task}` needs a value for param `{param}`")]
    #[diagnostic(code(cairn::graph::missing_param))]
    MissingParam {
        /// The pattern task.
        task: String,
        /// The param.
        param: String,
        #[help]
        help: Option<String>,
    },

    /// Several problems at once.
    #[error("{count} problems with task dependencies")]
    #[diagnostic(code(cairn::graph::many))]
    Many {
        /// How many.
        count: usize,
        #[related]
        errors: Vec<GraphError>,
    },
}

impl GraphError {
    /// Folds a non-empty list of problems into one error.
    pub fn collect(mut errors: Vec<GraphError>) -> GraphError {
        if errors.len() == 1 {
            errors.pop().expect("length checked")
        } else {
            GraphError::Many {
                count: errors.len(),
                errors,
            }
        }
    }
}
