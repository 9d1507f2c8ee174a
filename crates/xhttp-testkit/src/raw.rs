//! Servers that break HTTP itself, which an HTTP framework cannot be made to do, and an
//! address where nothing listens.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use crate::connection::bind_loopback;

/// Bytes that no HTTP parser accepts as a status line.
const GARBAGE: &[u8] = b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n";

/// Most request-head bytes read before acting, so a client cannot make a task buffer forever.
const HEAD_LIMIT: usize = 64 * 1024;

/// What a [`RawServer`] does with each connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Garbage,
    Hang,
    ResetBeforeHeaders,
}

/// A plain TCP server on `127.0.0.1` that misbehaves below HTTP. It stops when dropped,
/// closing every connection it holds.
pub struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl fmt::Debug for RawServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawServer")
            .field("addr", &self.addr)
            .field("accepted", &self.accepted())
            .finish()
    }
}

impl RawServer {
    /// Answers every request with bytes that are not HTTP, then closes the connection.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn garbage() -> RawServer {
        Self::start(Behaviour::Garbage).await
    }

    /// Accepts connections, reads what comes, and never answers.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn hang() -> RawServer {
        Self::start(Behaviour::Hang).await
    }

    /// Reads the request head, then resets the connection (TCP RST) without a response.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound, or outside a tokio runtime.
    pub async fn reset_before_headers() -> RawServer {
        Self::start(Behaviour::ResetBeforeHeaders).await
    }

    /// The bound address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn start(behaviour: Behaviour) -> RawServer {
        let (listener, addr) = bind_loopback().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            // Dropping the set when this task is aborted aborts every connection task too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accept = listener.accept() => {
                        let Ok((stream, _)) = accept else { continue };
                        counter.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(serve(stream, behaviour));
                    }
                    // Reap finished connections so the set does not grow.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        RawServer {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, behaviour: Behaviour) {
    match behaviour {
        Behaviour::Garbage => {
            // Answer after the request: garbage sent while the client still writes could
            // arrive as a reset instead of as bytes to parse.
            if read_head(&mut stream).await {
                let _ = stream.write_all(GARBAGE).await;
                let _ = stream.shutdown().await;
            }
        }
        Behaviour::Hang => {
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
        Behaviour::ResetBeforeHeaders => {
            read_head(&mut stream).await;
            // A zero linger turns the close into a reset.
            let _ = stream.set_zero_linger();
        }
    }
}

/// Reads until the end of a request head (or EOF, an error, or [`HEAD_LIMIT`]); true when a
/// whole head arrived.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while head.len() < HEAD_LIMIT {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return true;
        }
    }
    false
}

/// A loopback address where nothing listens: connecting to it is refused.
///
/// Binds a free port and releases it at once; another process could take the port in
/// between, which on a test machine is rare enough to ignore.
///
/// # Panics
///
/// If no loopback port can be bound.
pub fn refused_addr() -> SocketAddr {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("xhttp-testkit: cannot bind a port on 127.0.0.1")
}
