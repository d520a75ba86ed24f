//! End-to-end tests: the real `cairn` binary on temporary projects. One test binary, one module per area.

mod affected;
mod aws;
mod cache;
mod deploy;
mod docs;
mod engine;
mod fleet;
mod fleet_ssh;
mod hardening;
mod import;
mod kills;
mod matrix;
mod monitoring;
mod nix;
mod plugins;
mod reapi;
mod remote;
mod reports;
mod secrets;
mod support;
mod ui;
mod vault;
mod watch;
mod wsl;
