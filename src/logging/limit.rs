//! Log lines that anyone who can reach sockvisor can cause, one per
//! attempt (a refused control request, a refused peer): at most a few per
//! second from each place that writes them, so that a flood of bad input
//! cannot fill the log, with the number left out said once the next one is
//! let through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines let through per window, from one place.
const LINES_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

/// One place's budget of lines (see [`crate::warn_limited`]).
pub struct RateLimit(Mutex<Window>);

struct Window {
    began: Option<Instant>,
    let_through: u32,
    left_out: u64,
}

impl RateLimit {
    pub const fn new() -> RateLimit {
        RateLimit(Mutex::new(Window {
            began: None,
            let_through: 0,
            left_out: 0,
        }))
    }

    /// `Some(left out before this one)` when a line may be written now,
    /// `None` when it is to be left out (and counted).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut window = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expired = window
            .began
            .is_none_or(|began| now.saturating_duration_since(began) >= WINDOW);
        if expired {
            window.began = Some(now);
            window.let_through = 0;
        }
        if window.let_through >= LINES_PER_WINDOW {
            window.left_out = window.left_out.saturating_add(1);
            return None;
        }
        window.let_through += 1;
        Some(std::mem::take(&mut window.left_out))
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::new()
    }
}

/// `tracing::warn!`, at most a few times a second from this place: the
/// lines left out are counted and said with the next one written.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)*) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new();
        if let Some(left_out) = LIMIT.allow(std::time::Instant::now()) {
            if left_out > 0 {
                tracing::warn!("{left_out} more like the next line were left out");
            }
            tracing::warn!($($arg)*);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_rest_is_counted() {
        let limit = RateLimit::new();
        let start = Instant::now();
        let allowed: Vec<Option<u64>> = (0..25).map(|_| limit.allow(start)).collect();
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 10);
        assert!(allowed[..10].iter().all(|a| *a == Some(0)));
        // The next window lets one through, with the count of those left out.
        assert_eq!(limit.allow(start + WINDOW), Some(15));
        assert_eq!(limit.allow(start + WINDOW), Some(0));
    }
}
