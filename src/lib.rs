//! cairn: a task runner for people who run many machines from one repository.
//!
//! Dependencies point one way: `cli` → `report` → `run` → `graph`/`cache`/`secrets` → `config`, all above the
//! foundations `atomic`, `paths`, `lockfile` and `time`; docs/contributing.md has the map a test holds the code to.

// Errors carry the source text and spans their diagnostics render, and each is returned once per command, on the
// way out: boxing them would cost clarity for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod atomic;
pub mod cache;
pub mod cli;
pub mod config;
pub mod graph;
pub mod import;
pub mod lockfile;
pub mod paths;
pub mod reapi;
pub mod report;
pub mod run;
pub mod secrets;
pub mod time;
pub mod ui;
