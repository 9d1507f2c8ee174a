//! The error log: one record per failed caller (the seeds' `addAjaxErrorInfo`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use xhttp_core::{BusinessCode, ErrorKind};

use super::lock;

/// One failed call, as the error log keeps it.
///
/// Nothing in it is a secret: the URL is redacted ([`xhttp_core::redact::uri`]) and then
/// passed through [`mask_tokens`](crate::mask_tokens), and the message is the error's own,
/// masked the same way.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    /// The request's method.
    pub method: Method,
    /// The request's URL, with secrets masked.
    pub url: String,
    /// The final HTTP status, when there was a response.
    pub status: Option<StatusCode>,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The envelope's failure code, for business errors.
    pub business_code: Option<BusinessCode>,
    /// The message shown to the user: the server's or a layer's message, else what happened
    /// ("server answered 503 Service Unavailable", "attempt timed out").
    pub message: String,
    /// How many attempts the call made (0 when no layer counted them).
    pub attempts: u32,
    /// From the call to its failure, retries and backoff included.
    pub duration: Duration,
    /// When it failed, on the wall clock.
    pub time: SystemTime,
}

/// Where error records go: a ring in memory ([`RingLog`], the default), a file, a metrics
/// pipeline, a report to the server.
///
/// `record` is called on the task that polled the failed caller's future: hand the record
/// over rather than block. An `Arc<L>` is a log when `L` is, so the caller can keep a handle.
///
/// ```
/// use std::sync::Mutex;
/// use xhttp_status::{ErrorLog, ErrorRecord, ReportLayer};
///
/// #[derive(Default)]
/// struct Urls(Mutex<Vec<String>>);
///
/// impl ErrorLog for Urls {
///     fn record(&self, record: ErrorRecord) {
///         self.0.lock().unwrap().push(record.url);
///     }
/// }
///
/// let layer = ReportLayer::builder().error_log(Urls::default()).build();
/// assert!(layer.error_log().is_none()); // no ring: a custom log was given
/// ```
pub trait ErrorLog: Send + Sync {
    /// Keeps `record`.
    fn record(&self, record: ErrorRecord);
}

impl<L: ErrorLog + ?Sized> ErrorLog for Arc<L> {
    fn record(&self, record: ErrorRecord) {
        (**self).record(record)
    }
}

/// The default capacity of a [`RingLog`]: 200 records, a working day of failures for an
/// admin front end (vben's error-log page keeps a list for the session) at a few hundred
/// bytes each.
pub const DEFAULT_RING_CAPACITY: usize = 200;

/// A bounded error log in memory: the newest records, never more than its capacity.
///
/// ```
/// use xhttp_status::RingLog;
///
/// let ring = RingLog::new(2);
/// assert!(ring.is_empty());
/// assert_eq!(ring.capacity(), 2);
/// ```
#[derive(Debug)]
pub struct RingLog {
    capacity: usize,
    records: Mutex<VecDeque<ErrorRecord>>,
}

impl RingLog {
    /// A ring keeping the newest `capacity` records (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        RingLog {
            capacity,
            // Grown on demand: most rings never fill.
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// The records, oldest first.
    pub fn records(&self) -> Vec<ErrorRecord> {
        lock(&self.records).iter().cloned().collect()
    }

    /// How many records the ring holds.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Whether the ring holds no record.
    pub fn is_empty(&self) -> bool {
        lock(&self.records).is_empty()
    }

    /// The most records the ring keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Removes every record.
    pub fn clear(&self) {
        lock(&self.records).clear();
    }
}

impl Default for RingLog {
    /// A ring of [`DEFAULT_RING_CAPACITY`] records.
    fn default() -> Self {
        RingLog::new(DEFAULT_RING_CAPACITY)
    }
}

impl ErrorLog for RingLog {
    fn record(&self, record: ErrorRecord) {
        if self.capacity == 0 {
            return;
        }
        let mut records = lock(&self.records);
        while records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(attempts: u32) -> ErrorRecord {
        ErrorRecord {
            method: Method::GET,
            url: "https://api.example.com/".into(),
            status: None,
            kind: ErrorKind::Transport,
            business_code: None,
            message: "connection failed".into(),
            attempts,
            duration: Duration::ZERO,
            time: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn keeps_the_newest_records_within_its_capacity() {
        let ring = RingLog::new(3);
        for attempts in 0..10 {
            ring.record(record(attempts));
            assert!(ring.len() <= 3);
        }
        let kept: Vec<u32> = ring.records().iter().map(|r| r.attempts).collect();
        assert_eq!(kept, [7, 8, 9]);
        ring.clear();
        assert!(ring.is_empty());
    }

    #[test]
    fn a_zero_capacity_ring_keeps_nothing() {
        let ring = RingLog::new(0);
        ring.record(record(1));
        assert!(ring.is_empty());
    }
}
