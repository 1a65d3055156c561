//! Integration tests: the real binary, real process trees, real HTTP. Linux/Unix only (the
//! Windows build is checked separately).
#![cfg(unix)]

mod cli;
mod engine;
mod hardening;
mod reliability;
mod strays;
mod support;
mod uvicorn;
mod watch;
