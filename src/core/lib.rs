//! Backend Warden's core: everything but the tray. It keeps exactly one copy of a developer's
//! local backend alive and honest: it launches it, supervises its whole process tree, restarts
//! it on crash, checks its health and captures its output. No GUI library is linked here.
//!
//! Data flows one way: inputs (user commands, child exits, probe results, stray scans) go to
//! the pure [`engine::supervisor`], whose effects the [`engine::runner`] carries out on the
//! real world. [`app`] wires the pieces together for the binaries and for tests.
//!
//! - [`engine`]: the state machine, the runner that carries out its effects, the status board.
//! - [`backend`]: what the engine acts on: the process tree, its log, health probes, strays,
//!   the code watch, the demo backend.
//! - [`ipc`]: the local socket or pipe the CLI and second launches talk through, and the
//!   handler of their requests.
//! - [`config`]: the config file: its types, defaults, checks and the file watch.
//! - [`status`]: the status report (`status --json`).

pub mod app;
pub mod autostart;
pub mod backend;
pub mod clock;
pub mod config;
pub mod detect;
pub mod diagnostics;
pub mod engine;
pub mod ipc;
pub mod logging;
pub mod paths;
pub mod private_fs;
pub mod status;
pub mod usage;

#[cfg(test)]
mod fuzz;
