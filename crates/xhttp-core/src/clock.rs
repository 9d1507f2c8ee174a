//! Time, injectable.
//!
//! Expiry, backoff and timeouts are computed on tokio's [`Instant`], never on
//! `SystemTime::now()`, so tests run on a paused tokio clock and a host whose wall clock is
//! wrong still refreshes tokens on time. The wall clock is asked only where a server speaks in
//! dates (`Date`, `Retry-After`, a JWT's `exp`), and a test can inject a skewed one.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

/// A source of time.
///
/// ```
/// use xhttp_core::{Clock, TokioClock};
/// let clock = TokioClock;
/// let a = clock.now();
/// assert!(clock.now() >= a);
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time on tokio's clock (which a test can pause and advance).
    fn now(&self) -> Instant;

    /// Wall-clock time, used only to read dates sent by a server.
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock shared by the clones of a layer.
pub type SharedClock = Arc<dyn Clock>;

/// The default clock: tokio's `Instant::now()` and the system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug)]
    struct Skewed(Duration);

    impl Clock for Skewed {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn system_now(&self) -> SystemTime {
            SystemTime::now() + self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_the_paused_clock() {
        let clock: SharedClock = Arc::new(TokioClock);
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(3600));
    }

    #[test]
    fn a_skewed_wall_clock_can_be_injected() {
        let clock: SharedClock = Arc::new(Skewed(Duration::from_secs(3600)));
        let skew = clock
            .system_now()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(skew > Duration::from_secs(3500));
    }
}
