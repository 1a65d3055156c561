//! The stop ladder of a Windows backend, as decisions without I/O: which step comes next and
//! when, given what has been seen so far. The Windows process layer's helper runs it (it
//! attaches to the backend's console, sends the events and watches who is still attached);
//! the table tests below run it on any OS.
//!
//! The rungs, per the Win32 console documentation and the way Python programs stop:
//! 1. Attach to the backend's console, through any live process of its job (the main process
//!    may be gone while a worker still runs). No console to attach to (a GUI-subsystem backend,
//!    or every process gone) means no event can reach it: the ladder ends **unreachable**, and
//!    the supervisor kills the tree at once; a stop never waits the grace period for nothing.
//! 2. `CTRL_C_EVENT` to every process on that console (the event cannot be limited to a process
//!    group, so the backend does not get a group of its own). Python raises
//!    `KeyboardInterrupt`, uvicorn shuts down gracefully, and uvicorn's reloader stops its
//!    worker the same way it does on every code change.
//! 3. After [`BREAK_AFTER`] (at most half the grace period), if anyone is still attached:
//!    `CTRL_BREAK_EVENT`, which a process cannot ignore with `SetConsoleCtrlHandler(NULL, TRUE)`
//!    (uvicorn handles `SIGBREAK` as a shutdown too).
//! 4. The Job Object kill when `stop.grace` ends: the supervisor's deadline, not a rung here.
//!    If neither event could be delivered, the ladder ends unreachable too: the kill is the
//!    supervisor's decision (`Input::Unreachable`), not the ladder's.
use std::time::Duration;

/// The longest wait between Ctrl+C and Ctrl+Break.
pub const BREAK_AFTER: Duration = Duration::from_secs(2);

/// The ladder for one stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ladder {
    /// When Ctrl+Break follows an undelivered-to-effect Ctrl+C, from the start of the stop.
    pub break_after: Duration,
}

impl Ladder {
    /// The ladder for a stop with this grace period: Ctrl+Break after [`BREAK_AFTER`], or after
    /// half the grace period when that is shorter, so that it comes before the kill.
    pub fn for_grace(grace: Duration) -> Ladder {
        Ladder {
            break_after: BREAK_AFTER.min(grace / 2),
        }
    }

    /// The next step, `elapsed` after the stop began, given what has been seen.
    pub fn next(&self, seen: &Seen, elapsed: Duration) -> Rung {
        match seen.console {
            Console::Unknown => return Rung::Attach,
            Console::None => return Rung::Done(Outcome::Unreachable(Why::NoConsole)),
            Console::Attached => {}
        }
        if !seen.others_attached {
            return Rung::Done(Outcome::Stopped);
        }
        match (seen.ctrl_c, seen.ctrl_break) {
            (Sent::NotYet, _) => Rung::CtrlC,
            (Sent::Failed, Sent::NotYet) => Rung::CtrlBreak,
            (Sent::Delivered, Sent::NotYet) if elapsed >= self.break_after => Rung::CtrlBreak,
            (Sent::Delivered, Sent::NotYet) => Rung::WaitUntil(self.break_after),
            (Sent::Failed, Sent::Failed) => Rung::Done(Outcome::Unreachable(Why::NotDelivered)),
            (_, _) => Rung::Done(Outcome::HandedOver),
        }
    }
}

/// What the ladder knows so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The backend's console.
    pub console: Console,
    /// Whether any process other than the helper is still attached to it (true until looked).
    pub others_attached: bool,
    /// The Ctrl+C event.
    pub ctrl_c: Sent,
    /// The Ctrl+Break event.
    pub ctrl_break: Sent,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen {
            console: Console::Unknown,
            others_attached: true,
            ctrl_c: Sent::NotYet,
            ctrl_break: Sent::NotYet,
        }
    }
}

/// The backend's console, as far as the helper knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Not tried yet.
    Unknown,
    /// The helper is attached to it.
    Attached,
    /// No process of the job has one (or none is left).
    None,
}

/// A console control event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Not sent yet.
    NotYet,
    /// `GenerateConsoleCtrlEvent` succeeded.
    Delivered,
    /// `GenerateConsoleCtrlEvent` failed.
    Failed,
}

/// The next step of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rung {
    /// Attach to the console of a live process of the job.
    Attach,
    /// Send `CTRL_C_EVENT` to the console.
    CtrlC,
    /// Send `CTRL_BREAK_EVENT` to the console.
    CtrlBreak,
    /// Watch the console until this long after the start of the stop (or until nobody else
    /// is attached), then ask again.
    WaitUntil(Duration),
    /// The ladder is over.
    Done(Outcome),
}

/// How a ladder ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nobody but the helper is left on the console: the backend stopped by itself.
    Stopped,
    /// The events went out; the kill at the end of the grace period is the supervisor's.
    HandedOver,
    /// Nothing can reach the backend: waiting for the grace period would be for nothing.
    Unreachable(Why),
}

/// Why nothing can reach the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No process of the job has a console (a GUI-subsystem backend).
    NoConsole,
    /// Neither Ctrl+C nor Ctrl+Break could be sent.
    NotDelivered,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::NoConsole => "the backend has no console to send Ctrl+C to",
            Why::NotDelivered => "neither Ctrl+C nor Ctrl+Break could be sent",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seen(console: Console, others: bool, ctrl_c: Sent, ctrl_break: Sent) -> Seen {
        Seen {
            console,
            others_attached: others,
            ctrl_c,
            ctrl_break,
        }
    }

    #[test]
    fn break_after_is_the_shorter_of_two_seconds_and_half_the_grace() {
        assert_eq!(
            Ladder::for_grace(Duration::from_secs(10)).break_after,
            BREAK_AFTER
        );
        assert_eq!(
            Ladder::for_grace(Duration::from_secs(1)).break_after,
            500 * MS
        );
        assert_eq!(
            Ladder::for_grace(Duration::ZERO).break_after,
            Duration::ZERO
        );
    }

    /// Each row: what has been seen, the time since the stop began, the expected step.
    #[test]
    fn which_step_when() {
        use Console::*;
        use Sent::*;
        let ladder = Ladder::for_grace(Duration::from_secs(10)); // Ctrl+Break after 2 s
        let rows: &[(Seen, Duration, Rung)] = &[
            // Start: attach first.
            (Seen::default(), Duration::ZERO, Rung::Attach),
            // A GUI backend: no console, unreachable at once, whatever the time.
            (
                seen(None, true, NotYet, NotYet),
                Duration::ZERO,
                Rung::Done(Outcome::Unreachable(Why::NoConsole)),
            ),
            // Attached: Ctrl+C at once.
            (
                seen(Attached, true, NotYet, NotYet),
                Duration::ZERO,
                Rung::CtrlC,
            ),
            // Ctrl+C went out: wait for the Ctrl+Break time.
            (
                seen(Attached, true, Delivered, NotYet),
                10 * MS,
                Rung::WaitUntil(BREAK_AFTER),
            ),
            (
                seen(Attached, true, Delivered, NotYet),
                BREAK_AFTER - MS,
                Rung::WaitUntil(BREAK_AFTER),
            ),
            // Still attached at the Ctrl+Break time.
            (
                seen(Attached, true, Delivered, NotYet),
                BREAK_AFTER,
                Rung::CtrlBreak,
            ),
            // Everyone left after Ctrl+C: done, no Ctrl+Break.
            (
                seen(Attached, false, Delivered, NotYet),
                300 * MS,
                Rung::Done(Outcome::Stopped),
            ),
            // Ctrl+C could not be sent: Ctrl+Break at once, no wait for nothing.
            (
                seen(Attached, true, Failed, NotYet),
                Duration::ZERO,
                Rung::CtrlBreak,
            ),
            // Neither could be sent (Wine 8): unreachable.
            (
                seen(Attached, true, Failed, Failed),
                Duration::ZERO,
                Rung::Done(Outcome::Unreachable(Why::NotDelivered)),
            ),
            // Both went out: the rest is the grace period's.
            (
                seen(Attached, true, Delivered, Delivered),
                BREAK_AFTER,
                Rung::Done(Outcome::HandedOver),
            ),
            // One of them went out: the same.
            (
                seen(Attached, true, Delivered, Failed),
                BREAK_AFTER,
                Rung::Done(Outcome::HandedOver),
            ),
            (
                seen(Attached, true, Failed, Delivered),
                Duration::ZERO,
                Rung::Done(Outcome::HandedOver),
            ),
            // Everyone left after Ctrl+Break.
            (
                seen(Attached, false, Delivered, Delivered),
                BREAK_AFTER,
                Rung::Done(Outcome::Stopped),
            ),
        ];
        for (i, (seen, elapsed, want)) in rows.iter().enumerate() {
            assert_eq!(
                ladder.next(seen, *elapsed),
                *want,
                "row {i}: {seen:?} at {elapsed:?}"
            );
        }
    }

    /// A whole stop of a backend that ignores both events, step by step: attach, Ctrl+C, wait,
    /// Ctrl+Break, hand over; never more than one wait, never a Ctrl+Break before its time.
    #[test]
    fn a_backend_that_ignores_everything_gets_each_rung_once_in_order() {
        let ladder = Ladder::for_grace(Duration::from_secs(1)); // Ctrl+Break after 500 ms
        let mut seen = Seen::default();
        let mut steps = Vec::new();
        let mut now = Duration::ZERO;
        loop {
            let rung = ladder.next(&seen, now);
            steps.push(rung);
            match rung {
                Rung::Attach => seen.console = Console::Attached,
                Rung::CtrlC => seen.ctrl_c = Sent::Delivered,
                Rung::CtrlBreak => seen.ctrl_break = Sent::Delivered,
                Rung::WaitUntil(t) => {
                    assert!(t > now, "a wait moves time on");
                    now = t;
                }
                Rung::Done(_) => break,
            }
            assert!(steps.len() < 10, "the ladder ends: {steps:?}");
        }
        assert_eq!(
            steps,
            vec![
                Rung::Attach,
                Rung::CtrlC,
                Rung::WaitUntil(500 * MS),
                Rung::CtrlBreak,
                Rung::Done(Outcome::HandedOver),
            ]
        );
    }
}
