//! Backend Warden keeps exactly one copy of a developer's local backend alive and honest: it
//! launches it, supervises its whole process tree, restarts it on crash, checks its health and
//! captures its output.
//!
//! Data flows one way: inputs (user commands, child exits, probe results) go to the pure
//! [`supervisor`], whose effects the [`runner`] carries out on the real world. [`app`] wires
//! the pieces together for the binary and for tests.

pub mod alerts;
pub mod app;
pub mod autostart;
pub mod board;
pub mod clock;
pub mod config;
pub mod config_watch;
pub mod control;
pub mod demo;
pub mod detect;
pub mod diagnostics;
pub mod envfile;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod icon;
pub mod ipc;
pub mod kept;
pub mod log_reader;
pub mod logging;
pub mod notifier;
pub mod output;
pub mod paths;
pub mod private_fs;
pub mod process;
pub mod runner;
pub mod status;
pub mod stop_url;
pub mod strays;
pub mod supervisor;
pub mod usage;
pub mod view;
pub mod watch;
