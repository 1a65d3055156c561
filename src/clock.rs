//! Time arithmetic that cannot panic: a deadline `d` after `t` that saturates instead of
//! overflowing `Instant`. Imports only `std`, so every module (the supervisor included) may use
//! it.

use std::time::{Duration, Instant};

/// `at + after`, or the latest instant this platform can represent on the way there. The
/// config bounds every duration, so this only matters for a value that slipped past them; an
/// `Instant + Duration` that overflows would panic the thread that computes it.
pub fn later(at: Instant, after: Duration) -> Instant {
    let mut step = after;
    loop {
        if let Some(deadline) = at.checked_add(step) {
            return deadline;
        }
        // Halving converges on a representable instant (`at + 0` always is).
        step /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_never_overflows() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(2)),
            now + Duration::from_secs(2)
        );
        assert!(later(now, Duration::MAX) > now);
        assert!(later(later(now, Duration::MAX), Duration::MAX) >= now);
    }
}
