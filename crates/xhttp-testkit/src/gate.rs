//! A gate that holds `GET /gate/{id}` requests until a test opens it.
//!
//! Concurrency tests need every request to be inside the server at the same time. Waiting
//! for a number of arrivals, instead of sleeping, makes that certain and keeps tests fast.

use tokio::sync::watch;

/// Holds requests to `GET /gate/{id}` until opened. Starts closed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = xhttp_testkit::TestServer::start().await;
/// let gate = server.gate();
/// assert_eq!(gate.arrived(), 0);
/// gate.open(); // requests now pass at once
/// gate.close(); // and are held again
/// # }
/// ```
#[derive(Debug)]
pub struct Gate {
    arrivals: watch::Sender<usize>,
    open: watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            arrivals: watch::Sender::new(0),
            open: watch::Sender::new(false),
        }
    }
}

impl Gate {
    /// Requests that have arrived at the gate since the server started, including those
    /// already let through.
    pub fn arrived(&self) -> usize {
        *self.arrivals.borrow()
    }

    /// Waits until at least `n` requests have arrived in total.
    pub async fn wait_for_arrivals(&self, n: usize) {
        let mut arrivals = self.arrivals.subscribe();
        // The sender lives in `self`, which outlives this borrow, so the channel cannot close.
        let _ = arrivals.wait_for(|arrived| *arrived >= n).await;
    }

    /// Lets every waiting request and every later one through, until [`close`](Self::close).
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Holds later requests again.
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Registers an arrival and waits until the gate is open.
    pub(crate) async fn pass(&self) {
        // Subscribe before announcing the arrival, so an `open()` that the announcement
        // triggers cannot be missed.
        let mut open = self.open.subscribe();
        self.arrivals.send_modify(|arrived| *arrived += 1);
        let _ = open.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_until_opened_and_counts_arrivals() {
        let gate = std::sync::Arc::new(Gate::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.pass().await })
            })
            .collect();
        gate.wait_for_arrivals(3).await;
        assert_eq!(gate.arrived(), 3);
        assert!(waiters.iter().all(|w| !w.is_finished()));
        gate.open();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        gate.pass().await; // open: passes at once
        assert_eq!(gate.arrived(), 4);
    }
}
