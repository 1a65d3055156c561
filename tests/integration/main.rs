//! Integration tests: the real binary, real process trees, real HTTP. Linux/Unix only (the
//! Windows build is checked separately).
#![cfg(unix)]

mod chaos;
mod cli;
mod config_ux;
mod engine;
mod faults;
mod hardening;
mod health;
mod listener;
mod memory;
mod seed;
mod strays;
mod support;
mod uvicorn;
mod watch;
