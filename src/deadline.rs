//! Deadlines: the one place where a moment is computed as "now plus a
//! wait". The waits come from flags, from the service manager's
//! `WATCHDOG_USEC`, from a child's `EXTEND_TIMEOUT_USEC` and from a re-exec's
//! state, so `Instant + Duration`, which panics past the clock's end, is
//! never used anywhere else: a wait too long for the clock ends in the far
//! future instead, which for a supervisor means "never".

use std::time::{Duration, Instant};

/// Longer than any process runs; a deadline this far ahead never comes.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The moment `wait` after `now`, or the far future when that is beyond
/// what the clock can represent. Never panics.
pub fn after(now: Instant, wait: Duration) -> Instant {
    if let Some(at) = now.checked_add(wait) {
        return at;
    }
    // The monotonic clock counts from boot in 64-bit seconds, so a hundred
    // years always fits; halving only matters on a platform whose clock
    // has less room, and ends at `now` itself at worst.
    let mut wait = wait.min(FAR_FUTURE);
    loop {
        if let Some(at) = now.checked_add(wait) {
            return at;
        }
        wait /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_wait_is_added_exactly() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_millis(1500)),
            now + Duration::from_millis(1500)
        );
        assert_eq!(after(now, Duration::ZERO), now);
    }

    #[test]
    fn a_wait_beyond_the_clock_ends_in_the_far_future_without_panicking() {
        let now = Instant::now();
        for wait in [
            Duration::MAX,
            Duration::from_secs(9_300_000_000_000_000_000),
            Duration::from_secs(u64::MAX / 2),
        ] {
            let at = after(now, wait);
            assert!(
                at.duration_since(now) >= Duration::from_secs(99 * 365 * 24 * 3600),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn the_far_future_is_later_than_any_bounded_duration() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > after(now, crate::duration::MAX_DURATION));
    }
}
