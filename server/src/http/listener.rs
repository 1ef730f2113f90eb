//! The HTTP listener: a cap on open connections and an idle deadline per connection.
//!
//! `axum::serve` sets neither (hyper has no timer there, so not even a header-read timeout): a
//! client that opens connections and sends nothing would hold each one forever. The token is only
//! checked once a request has arrived, so this is what bounds an unauthenticated peer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 1024;
/// A connection that moves no byte either way for this long is closed (idle keep-alive
/// connections, stalled downloads, slowloris).
const IDLE: Duration = Duration::from_secs(60);

pub(crate) struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    pub(crate) fn new(inner: TcpListener) -> Limited {
        Limited {
            inner,
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            idle: IDLE,
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            // The semaphore is never closed; should it be, accept nothing more.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return std::future::pending().await;
            };
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let idle = Box::pin(tokio::time::sleep(self.idle));
                    return (
                        Guarded {
                            stream,
                            idle,
                            timeout: self.idle,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: holds its slot, and fails with `TimedOut` once idle too long.
pub(crate) struct Guarded {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn progress(&mut self) {
        let deadline = Instant::now() + self.timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// What a poll of the socket returned: progress restarts the idle deadline; not ready is an
    /// error once the deadline has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.progress();
            return r;
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "HTTP connection idle",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.watch(cx, r)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut limited = Limited::new(l);
        limited.idle = Duration::from_millis(200);
        let addr = limited.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let mut buf = [0u8; 1];
            s.read(&mut buf).await
        });
        let (mut conn, _) = limited.accept().await;
        let mut buf = [0u8; 16];
        let err = conn.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(conn);
        assert!(matches!(client.await.expect("join"), Ok(0) | Err(_)));
    }
}
