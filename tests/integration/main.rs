//! Integration tests: the real binary, real process trees, real HTTP. Linux/Unix only (the
//! Windows build is checked separately).
#![cfg(unix)]

mod cli;
mod config_ux;
mod engine;
mod hardening;
mod health;
mod listener;
mod mutations;
mod reliability;
mod seed;
mod strays;
mod support;
mod uvicorn;
mod watch;
