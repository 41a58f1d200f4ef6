//! Millisecond time helpers shared by the components (Redis speaks milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in whole milliseconds, saturating at `u64::MAX`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(larder_core::time::millis(Duration::from_secs(2)), 2000);
/// ```
#[must_use]
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch of `t` (0 before the epoch).
#[must_use]
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// Milliseconds since the Unix epoch, now.
#[must_use]
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}
