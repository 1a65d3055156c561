//! Time for people and time arithmetic that cannot panic. Local time with the zone's name
//! ("10:02 CET"), the date too when it is not today: JSON keeps UTC RFC 3339, only human output
//! goes through here (`jiff` reads the system's time zone database, and on Windows the zone the
//! system is set to). And a deadline `d` after `t` that saturates instead of overflowing
//! `Instant`, so that every module (the supervisor included) may add durations safely.

use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// "10:02 CET" today, "2026-12-01 10:02 CET" another day, in the system's time zone (`TZ`
/// where set).
pub fn local_time(t: SystemTime) -> String {
    local_time_in(t, &TimeZone::system(), SystemTime::now())
}

fn local_time_in(t: SystemTime, zone: &TimeZone, now: SystemTime) -> String {
    let (Ok(t), Ok(now)) = (Timestamp::try_from(t), Timestamp::try_from(now)) else {
        return humantime::format_rfc3339_seconds(t).to_string();
    };
    let (t, now) = (
        t.to_zoned_datetime(zone.clone()),
        now.to_zoned_datetime(zone.clone()),
    );
    if t.date() == now.date() {
        t.strftime("%H:%M %Z").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M %Z").to_string()
    }
}

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
    fn local_times_carry_the_zone() {
        // 2026-01-15 09:02:00 UTC.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_768_467_720);
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let same_day = t + Duration::from_secs(3600);
        assert_eq!(local_time_in(t, &paris, same_day), "10:02 CET");
        let next_week = t + Duration::from_secs(7 * 86400);
        assert_eq!(local_time_in(t, &paris, next_week), "2026-01-15 10:02 CET");
        assert_eq!(local_time_in(t, &TimeZone::UTC, same_day), "09:02 UTC");
    }

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
