//! A listener whose connections a handler can drop.
//!
//! axum hands a handler no access to its socket, and its services cannot fail, so a
//! "dropped connection" fault cannot be expressed as a response. Each accepted socket
//! therefore carries a flag that a handler can set through [`ConnectionHandle`] (delivered in
//! the request's `ConnectInfo`): from then on every read and write fails, hyper gives up the
//! connection and closes the socket, and the client sees it end without a response.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Binds a free port on `127.0.0.1`.
///
/// A test server without loopback cannot do anything useful, so this panics instead of
/// making every test handle an error.
pub(crate) async fn bind_loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("xhttp-testkit: cannot bind a port on 127.0.0.1");
    let addr = listener
        .local_addr()
        .expect("xhttp-testkit: a bound listener has an address");
    (listener, addr)
}

/// A TCP listener producing [`Socket`]s.
#[derive(Debug)]
pub(crate) struct DroppableListener {
    inner: TcpListener,
}

impl DroppableListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for DroppableListener {
    type Io = Socket;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Socket, SocketAddr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        // Small responses must not wait for Nagle's algorithm: benchmarks compare latencies.
        let _ = stream.set_nodelay(true);
        let socket = Socket {
            stream,
            dropped: Arc::default(),
        };
        (socket, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted TCP stream that fails every operation once dropped by a handler.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    dropped: Arc<AtomicBool>,
}

impl Socket {
    fn check(&self) -> io::Result<()> {
        if self.dropped.load(Ordering::Acquire) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Lets a handler drop the connection its request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    dropped: Arc<AtomicBool>,
}

impl ConnectionHandle {
    /// Makes the connection fail; the response the handler then returns is never written.
    /// On HTTP/2 this ends every stream of the connection, as a real dropped connection does.
    pub(crate) fn drop_connection(&self) {
        self.dropped.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, DroppableListener>> for ConnectionHandle {
    fn connect_info(stream: IncomingStream<'_, DroppableListener>) -> Self {
        Self {
            dropped: stream.io().dropped.clone(),
        }
    }
}
