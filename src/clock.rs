//! Times for people: local time with the zone's name ("10:02 CET"), the date too when it is
//! not today. JSON keeps UTC RFC 3339; only human output goes through here. Imports `jiff` (it
//! reads the system's time zone database, and on Windows the zone the system is set to).

use std::time::SystemTime;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
