//! The engine: the pure state machine that decides ([`supervisor`]), the runner that
//! carries out its decisions on the real world ([`runner`]), and the board it publishes
//! its state on ([`board`]).

pub mod board;
pub mod runner;
pub mod supervisor;
