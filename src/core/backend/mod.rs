//! What the engine acts on: the backend's process tree ([`process`]), its output
//! ([`backend_log`], read back by [`log_reader`]), its health ([`health`]), copies the warden
//! did not start ([`strays`]), its source files ([`code_watch`]), and the built-in [`demo`]
//! backend.

pub mod backend_log;
pub mod code_watch;
pub mod demo;
pub mod envfile;
pub mod health;
pub mod kept;
pub mod log_reader;
pub mod process;
pub mod stop_url;
pub mod strays;
