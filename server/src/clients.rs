//! The registry of connected clients, for `GET /api/v1/clients` and the transport column of
//! `GET /api/v1/transfers`.
//!
//! A session registers when its CONNECT is accepted and the [`Registration`] it holds unregisters on
//! drop, so the registry cannot leak entries whatever way a session ends. Byte counts come from
//! [`Io`]: the session wraps each stream it reads or writes in [`Counted`], so bytes are counted
//! where they cross the socket, with two relaxed atomic adds per read or write call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::link::{PacketRead, PacketWrite, Transport};
use crate::metrics::Metrics;

/// Byte and packet counts of one connection.
#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    packets_in: AtomicU64,
}

/// The counters of one connection, shared by its stream wrappers; also feeds the server-wide
/// [`Metrics`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Io {
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Io {
    pub(crate) fn new(metrics: Arc<Metrics>, transport: Transport) -> Io {
        Io {
            counters: Arc::default(),
            metrics,
            transport,
        }
    }

    /// Wraps one direction of a stream so its bytes are counted.
    pub(crate) fn wrap<T>(&self, inner: T) -> Counted<T> {
        Counted {
            inner,
            io: self.clone(),
        }
    }

    /// A packet was decoded from this connection.
    pub(crate) fn packet_in(&self, p: &quicft_proto::Packet) {
        self.packet_named(p.name());
    }

    fn packet_named(&self, name: &str) {
        self.counters.packets_in.fetch_add(1, Relaxed);
        self.metrics.packet_in(name);
    }

    fn add_in(&self, n: usize) {
        self.counters.bytes_in.fetch_add(n as u64, Relaxed);
        self.metrics.bytes_in(self.transport, n as u64);
    }

    fn add_out(&self, n: usize) {
        self.counters.bytes_out.fetch_add(n as u64, Relaxed);
        self.metrics.bytes_out(self.transport, n as u64);
    }
}

/// A stream half whose bytes are counted in an [`Io`].
pub(crate) struct Counted<T> {
    inner: T,
    io: Io,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.io.add_in(buf.filled().len().saturating_sub(before));
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.io.add_out(n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: PacketRead> PacketRead for Counted<T> {
    fn stop(&mut self, code: u32) {
        self.inner.stop(code);
    }
}

impl<T: PacketWrite> PacketWrite for Counted<T> {
    fn reset(&mut self, code: u32) {
        self.inner.reset(code);
    }
}

struct Entry {
    client_id: Arc<str>,
    transport: Transport,
    peer: SocketAddr,
    /// Unix seconds.
    connected_at: u64,
    /// Open streams: the control stream plus QUIC data streams.
    streams: AtomicU64,
    io: Io,
}

/// Connected clients. A client id appears twice only for the moment a session is being taken over.
#[derive(Default)]
pub struct Clients {
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    next_id: AtomicU64,
}

/// A connected client as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub transport: Transport,
    pub peer: SocketAddr,
    /// Unix seconds.
    pub connected_at: u64,
    pub streams: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // The map stays consistent whatever a panicking holder did: every change is one insert or remove.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session whose CONNECT was accepted (and counts that CONNECT, which the session
    /// read before it existed); it stays listed until the returned value is dropped.
    pub(crate) fn register(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        transport: Transport,
        peer: SocketAddr,
        io: Io,
    ) -> Registration {
        io.packet_named("CONNECT");
        let id = self.next_id.fetch_add(1, Relaxed);
        let connected_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let entry = Arc::new(Entry {
            client_id: client_id.clone(),
            transport,
            peer,
            connected_at,
            streams: AtomicU64::new(1),
            io,
        });
        self.lock().insert(id, entry.clone());
        Registration {
            clients: self.clone(),
            id,
            entry,
        }
    }

    /// Every connected client, by client id then connection time.
    pub fn list(&self) -> Vec<ClientInfo> {
        let entries: Vec<Arc<Entry>> = self.lock().values().cloned().collect();
        let mut out: Vec<ClientInfo> = entries.iter().map(|e| info(e)).collect();
        out.sort_by(|a, b| (&a.client_id, a.connected_at).cmp(&(&b.client_id, b.connected_at)));
        out
    }

    /// The transport of a client's newest connection, if it is connected.
    pub fn transport_of(&self, client_id: &str) -> Option<Transport> {
        let m = self.lock();
        m.iter()
            .filter(|(_, e)| &*e.client_id == client_id)
            .max_by_key(|(id, _)| **id)
            .map(|(_, e)| e.transport)
    }

    /// Client id → transport of its newest connection, for joining with a list of transfers.
    pub fn transports(&self) -> HashMap<String, Transport> {
        let m = self.lock();
        let mut newest: HashMap<&str, (u64, Transport)> = HashMap::new();
        for (id, e) in m.iter() {
            let slot = newest.entry(&e.client_id).or_insert((*id, e.transport));
            if *id > slot.0 {
                *slot = (*id, e.transport);
            }
        }
        newest
            .into_iter()
            .map(|(k, (_, t))| (k.to_owned(), t))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn info(e: &Entry) -> ClientInfo {
    let c = &e.io.counters;
    ClientInfo {
        client_id: e.client_id.to_string(),
        transport: e.transport,
        peer: e.peer,
        connected_at: e.connected_at,
        streams: e.streams.load(Relaxed),
        bytes_in: c.bytes_in.load(Relaxed),
        bytes_out: c.bytes_out.load(Relaxed),
        packets_in: c.packets_in.load(Relaxed),
    }
}

/// A session's place in the registry; unregisters on drop.
pub(crate) struct Registration {
    clients: Arc<Clients>,
    id: u64,
    entry: Arc<Entry>,
}

impl Registration {
    pub(crate) fn stream_opened(&self) {
        self.entry.streams.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        // Never below zero, whatever order the session reports in.
        let _ = self
            .entry
            .streams
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// The connection's counters (to wrap the streams it opens later).
    pub(crate) fn io(&self) -> &Io {
        &self.entry.io
    }

    pub(crate) fn packet_in(&self, p: &quicft_proto::Packet) {
        self.entry.io.packet_in(p);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn counts_bytes_and_unregisters_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let clients = Arc::new(Clients::default());
        let io = Io::new(metrics.clone(), Transport::Tcp);
        let (a, b) = tokio::io::duplex(64);
        let (mut ra, mut wa) = (
            io.wrap(tokio::io::split(a).0),
            io.wrap(tokio::io::split(b).1),
        );
        wa.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        ra.read_exact(&mut buf).await.expect("read");
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let id: Arc<str> = "dev-1".into();
        let reg = clients.register(&id, Transport::Tcp, peer, io.clone());
        reg.stream_opened();
        reg.stream_closed();
        reg.stream_closed();
        reg.stream_closed();
        let list = clients.list();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].bytes_in, list[0].bytes_out, list[0].streams),
            (5, 5, 0)
        );
        assert_eq!(clients.transport_of("dev-1"), Some(Transport::Tcp));
        drop(reg);
        assert!(clients.is_empty());
        assert_eq!(clients.transport_of("dev-1"), None);
    }
}
