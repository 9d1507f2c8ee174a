//! Stalled seconds: the seconds of a run in which calls could not start.
//!
//! A closed-loop run (a fixed number of workers, each starting its next call when the last
//! one ends) that stalls shows it as seconds in which almost no call starts: every worker is
//! stuck behind a refresh, a cool-down or a hung trip. [`StartLog`] buckets the moments calls
//! start by wall-clock second and counts those seconds.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// When each call of a run started, bucketed by wall-clock second from the log's creation.
///
/// A call **starts** when its request is handed to the client. A second `[k, k + 1)` of the
/// run counts when it ends before the last call started (afterwards nothing is left to
/// start); it is **stalled** when fewer calls started in it than `share` of the median of
/// the counted seconds. With `share = 0.1`: a second in which fewer than 10% of a typical
/// second's calls could start.
///
/// ```
/// use xhttp_testkit::StartLog;
///
/// let log = StartLog::new();
/// for _ in 0..100 {
///     log.record();
/// }
/// assert_eq!(log.starts(), 100);
/// // All within the first second, which has not ended: no second counts yet.
/// assert_eq!(log.stalled_seconds(0.1), 0);
/// ```
#[derive(Debug, Clone)]
pub struct StartLog {
    origin: Instant,
    inner: Arc<Mutex<Buckets>>,
}

#[derive(Debug, Default)]
struct Buckets {
    per_second: Vec<u64>,
    last_start: Duration,
}

impl Default for StartLog {
    fn default() -> Self {
        Self::new()
    }
}

impl StartLog {
    /// A log whose second 0 begins now.
    pub fn new() -> StartLog {
        StartLog {
            origin: Instant::now(),
            inner: Arc::default(),
        }
    }

    fn buckets(&self) -> MutexGuard<'_, Buckets> {
        // Each update is one push or increment, so a poisoned lock still holds usable data.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records that a call starts now.
    pub fn record(&self) {
        self.record_at(self.origin.elapsed());
    }

    /// Records a call that started `at` after the log's origin.
    pub fn record_at(&self, at: Duration) {
        let second = at.as_secs() as usize;
        let mut buckets = self.buckets();
        if buckets.per_second.len() <= second {
            buckets.per_second.resize(second + 1, 0);
        }
        buckets.per_second[second] += 1;
        buckets.last_start = buckets.last_start.max(at);
    }

    /// Calls recorded.
    pub fn starts(&self) -> u64 {
        self.buckets().per_second.iter().sum()
    }

    /// Starts in each counted second (every whole second before the last start).
    pub fn per_second(&self) -> Vec<u64> {
        let buckets = self.buckets();
        let counted = buckets.last_start.as_secs() as usize;
        let mut seconds = buckets.per_second.clone();
        seconds.resize(counted, 0);
        seconds
    }

    /// Counted seconds in which fewer calls started than `share` of the median second.
    pub fn stalled_seconds(&self, share: f64) -> u64 {
        stalled(&self.per_second(), share)
    }
}

fn stalled(seconds: &[u64], share: f64) -> u64 {
    if seconds.is_empty() {
        return 0;
    }
    let mut sorted = seconds.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2] as f64;
    seconds
        .iter()
        .filter(|n| (**n as f64) < share * median)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_with_few_starts_is_stalled() {
        assert_eq!(stalled(&[100, 100, 9, 100, 0], 0.1), 2);
        assert_eq!(stalled(&[100, 100, 10, 100], 0.1), 0);
        assert_eq!(stalled(&[], 0.1), 0);
    }

    #[test]
    fn seconds_after_the_last_start_do_not_count() {
        let log = StartLog::new();
        for ms in [0, 10, 20, 1_500, 2_000, 2_100] {
            log.record_at(Duration::from_millis(ms));
        }
        // Seconds 0 and 1 end before the last start at 2.1 s; second 2 does not.
        assert_eq!(log.per_second(), [3, 1]);
        log.record_at(Duration::from_millis(3_200));
        assert_eq!(log.per_second(), [3, 1, 2]);
        // Second 3 counts once a call starts after it.
        log.record_at(Duration::from_millis(4_100));
        assert_eq!(log.per_second(), [3, 1, 2, 1]);
        assert_eq!(log.stalled_seconds(0.5), 0);
        log.record_at(Duration::from_millis(6_000));
        assert_eq!(log.per_second(), [3, 1, 2, 1, 1, 0]);
        assert_eq!(log.stalled_seconds(0.1), 1);
    }
}
