//! Every `tracing` event of a test binary, captured as text, so that a test can prove that no
//! secret is ever logged, by xhttp or by the crates below it.

use std::sync::{Arc, Mutex, OnceLock};

/// The text of every `tracing` event this process wrote at TRACE level and above, from every
/// thread and every crate (hyper's and hyper-util's included).
///
/// The first call to [`TraceLog::global`] installs a global subscriber, so a test binary uses
/// this log or a global subscriber of its own, not both.
///
/// ```
/// let log = xhttp_testkit::TraceLog::global();
/// tracing::info!("hello from a test");
/// assert!(log.text().contains("hello from a test"));
/// log.assert_free_of(&["SECRET-never-logged"]);
/// ```
pub struct TraceLog(Arc<Mutex<Vec<u8>>>);

impl TraceLog {
    /// The process's log, installing its subscriber on the first call.
    ///
    /// # Panics
    ///
    /// When another global subscriber was installed first: the capture would then be empty,
    /// and every "nothing was logged" assertion would pass without meaning anything.
    pub fn global() -> &'static TraceLog {
        static LOG: OnceLock<TraceLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || Capture(writer.clone()))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("TraceLog needs to be the binary's only global subscriber");
            TraceLog(buffer)
        })
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Panics when any of `secrets` appears in the log; the message never quotes the secret.
    pub fn assert_free_of(&self, secrets: &[&str]) {
        let text = self.text();
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !text.contains(secret),
                "secret #{i} of the list reached a tracing event"
            );
        }
    }
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
