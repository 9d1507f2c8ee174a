//! The error log: one record per failed caller (an axios wrapper's `addAjaxErrorInfo`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use xhttp_core::{BusinessCode, ErrorKind};

use super::lock;

/// One failed call, as the error log keeps it.
///
/// Nothing in it is a secret: the URL is redacted ([`xhttp_core::redact::uri`]) and then
/// passed through core's one masker ([`xhttp_core::mask::server_text`], capped at 2 KiB), and
/// the message is the error's own, masked the same way (capped at 4 KiB).
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

/// The default byte budget of a [`RingLog`]: 1 MiB. A record the report layer writes is a few
/// hundred bytes and at most about 6 KiB (a 4 KiB message, a 2 KiB URL), so 200 ordinary
/// records fit many times over, while a burst of failures with huge server messages cannot
/// hold more than this.
pub const DEFAULT_RING_BYTES: usize = 1 << 20;

/// A bounded error log in memory: the newest records, never more than its capacity in count
/// nor its byte budget in size, the oldest evicted first.
///
/// A record's size is the size of [`ErrorRecord`] plus the bytes of its URL, message and
/// textual business code. A single record larger than the whole budget is kept alone: the
/// newest failure is always there to read.
///
/// ```
/// use xhttp_status::RingLog;
///
/// let ring = RingLog::new(2).with_max_bytes(64 * 1024);
/// assert!(ring.is_empty());
/// assert_eq!(ring.capacity(), 2);
/// assert_eq!(ring.max_bytes(), 64 * 1024);
/// assert_eq!(ring.bytes(), 0);
/// ```
#[derive(Debug)]
pub struct RingLog {
    capacity: usize,
    max_bytes: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    // Grown on demand: most rings never fill.
    records: VecDeque<ErrorRecord>,
    bytes: usize,
}

impl RingLog {
    /// A ring keeping the newest `capacity` records (0 keeps none) within
    /// [`DEFAULT_RING_BYTES`].
    pub fn new(capacity: usize) -> Self {
        RingLog {
            capacity,
            max_bytes: DEFAULT_RING_BYTES,
            ring: Mutex::new(Ring::default()),
        }
    }

    /// The same ring with a byte budget of `max_bytes` instead of [`DEFAULT_RING_BYTES`].
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The records, oldest first.
    pub fn records(&self) -> Vec<ErrorRecord> {
        lock(&self.ring).records.iter().cloned().collect()
    }

    /// How many records the ring holds.
    pub fn len(&self) -> usize {
        lock(&self.ring).records.len()
    }

    /// Whether the ring holds no record.
    pub fn is_empty(&self) -> bool {
        lock(&self.ring).records.is_empty()
    }

    /// The most records the ring keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The most bytes the ring's records may hold together.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bytes the ring's records hold now, counted as [`RingLog`] describes.
    pub fn bytes(&self) -> usize {
        lock(&self.ring).bytes
    }

    /// Removes every record.
    pub fn clear(&self) {
        let mut ring = lock(&self.ring);
        ring.records.clear();
        ring.bytes = 0;
    }
}

/// What a record holds in memory, approximately: its own size and its text.
fn size_of_record(record: &ErrorRecord) -> usize {
    let code = match &record.business_code {
        Some(BusinessCode::Str(code)) => code.len(),
        _ => 0,
    };
    std::mem::size_of::<ErrorRecord>() + record.url.len() + record.message.len() + code
}

impl Default for RingLog {
    /// A ring of [`DEFAULT_RING_CAPACITY`] records within [`DEFAULT_RING_BYTES`].
    fn default() -> Self {
        RingLog::new(DEFAULT_RING_CAPACITY)
    }
}

impl ErrorLog for RingLog {
    fn record(&self, mut record: ErrorRecord) {
        if self.capacity == 0 {
            return;
        }
        // A string built by masking may have room for the text it came from.
        record.url.shrink_to_fit();
        record.message.shrink_to_fit();
        let size = size_of_record(&record);
        let mut ring = lock(&self.ring);
        while ring.records.len() >= self.capacity
            || (!ring.records.is_empty() && ring.bytes + size > self.max_bytes)
        {
            if let Some(old) = ring.records.pop_front() {
                ring.bytes -= size_of_record(&old);
            }
        }
        ring.bytes += size;
        ring.records.push_back(record);
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
    fn many_large_records_stay_within_the_byte_budget() {
        let ring = RingLog::new(1_000).with_max_bytes(256 * 1024);
        for attempts in 0..210 {
            let mut large = record(attempts);
            large.message = format!("{attempts:03}").repeat(4 * 1024 / 3 * 4);
            ring.record(large);
            assert!(ring.bytes() <= ring.max_bytes(), "{}", ring.bytes());
        }
        let kept: Vec<u32> = ring.records().iter().map(|r| r.attempts).collect();
        assert!(kept.len() < 210 && kept.len() > 10, "{}", kept.len());
        assert_eq!(kept.last(), Some(&209), "the newest is kept");
        assert!(
            kept.windows(2).all(|w| w[0] + 1 == w[1]),
            "oldest evicted first"
        );
        let held: usize = ring.records().iter().map(size_of_record).sum();
        assert_eq!(held, ring.bytes());
        ring.clear();
        assert_eq!(ring.bytes(), 0);
    }

    #[test]
    fn a_record_larger_than_the_budget_is_kept_alone() {
        let ring = RingLog::new(10).with_max_bytes(1024);
        ring.record(record(1));
        let mut huge = record(2);
        huge.message = "x".repeat(4096);
        ring.record(huge);
        assert_eq!(ring.len(), 1);
        ring.record(record(3));
        let kept: Vec<u32> = ring.records().iter().map(|r| r.attempts).collect();
        assert_eq!(kept, [3]);
    }

    #[test]
    fn the_default_ring_has_the_documented_bounds() {
        let ring = RingLog::default();
        assert_eq!(ring.capacity(), DEFAULT_RING_CAPACITY);
        assert_eq!(ring.max_bytes(), DEFAULT_RING_BYTES);
    }

    #[test]
    fn a_zero_capacity_ring_keeps_nothing() {
        let ring = RingLog::new(0);
        ring.record(record(1));
        assert!(ring.is_empty());
    }
}
