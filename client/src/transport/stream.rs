//! MQTT over one byte stream (TCP, or TLS over TCP): every channel shares it.
//!
//! ```text
//!  control queue ─┐
//!  ack queue ─────┤  writer task: strict priority, whole packets  ──►  socket
//!  telemetry ─────┤  (order set by Priorities; acks ride with control)
//!  file ──────────┘
//!  socket  ──►  reader task  ──►  session (acks by packet id, deliveries by subscription)
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::io::{run_writer, PacketReader, PriorityQueues, WriterEnd};
use super::{ack_capacity, handshake, new_shared, read_loop, resolve, spawn};
use super::{Established, Link, ReadEnd};
use crate::channel::{ChannelKind, ChannelTx, Outgoing};
use crate::error::{CloseReason, Error, Result};
use crate::options::{ClientOptions, Priorities, Transport};
use crate::session::Shared;

/// How long a graceful shutdown waits for queued data and the DISCONNECT to be written.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// The channels of a TCP/TLS connection: one sender per kind into the writer's queues. All share
/// channel id 0, since there is only one stream.
pub(crate) struct StreamLink {
    control: ChannelTx,
    telemetry: ChannelTx,
    file: ChannelTx,
}

pub(crate) async fn establish(options: &ClientOptions, connect: Bytes) -> Result<Established> {
    let addrs = resolve(&options.host, options.port()).await?;
    let tcp = TcpStream::connect(addrs.as_slice()).await?;
    let remote = tcp.peer_addr()?;
    // Telemetry is many small packets; Nagle would hold each one for the previous one's ACK.
    tcp.set_nodelay(true)?;
    if let Some(lowat) = options.tcp_notsent_lowat {
        // Best effort: kernels without it just queue more in the socket.
        if let Err(e) = socket2_06::SockRef::from(&tcp).set_tcp_notsent_lowat(lowat) {
            tracing::debug!(%e, "TCP_NOTSENT_LOWAT not set");
        }
    }
    let io: Box<dyn ByteStream> = match options.transport {
        Transport::Tls => {
            let config = crate::tls::tls_config(&options.tls)?;
            let name = rustls::pki_types::ServerName::try_from(options.server_name().to_owned())
                .map_err(|e| {
                    Error::InvalidOptions(format!("server name {:?}: {e}", options.server_name()))
                })?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(tls_error)?;
            Box::new(tls)
        }
        _ => Box::new(tcp),
    };
    tracing::debug!(%remote, transport = %options.transport, "connected");
    let (rd, mut wr) = tokio::io::split(io);
    let max_in = options.max_incoming_packet_size as usize;
    let mut reader = PacketReader::new(rd, options.protocol, max_in);
    let connack = handshake(&mut reader, &mut wr, &connect).await?;
    let shared = new_shared(options, &connack);

    let queue = options.channel_queue.max(1);
    let (acks, acks_rx) = mpsc::channel(ack_capacity(options));
    let (control_tx, control_rx) = mpsc::channel(queue);
    let (telemetry_tx, telemetry_rx) = mpsc::channel(queue);
    let (file_tx, file_rx) = mpsc::channel(queue);
    let chan = |kind, data| ChannelTx {
        id: 0,
        kind,
        data,
        acks: acks.clone(),
    };
    let link = StreamLink {
        control: chan(ChannelKind::Control, control_tx),
        telemetry: chan(ChannelKind::Telemetry, telemetry_tx),
        file: chan(ChannelKind::File, file_tx),
    };
    let levels = order_levels(
        options.priorities,
        control_rx,
        acks_rx,
        telemetry_rx,
        file_rx,
    );

    let writer_shared = shared.clone();
    spawn(async move {
        let mut queues = PriorityQueues::new(levels);
        let cancel = writer_shared.cancel.clone();
        match run_writer(&mut queues, &mut wr, &cancel).await {
            Ok(WriterEnd::Finish(done)) => {
                let _ = wr.shutdown().await;
                let _ = done.send(());
            }
            Ok(WriterEnd::Closed) => {
                let _ = wr.shutdown().await;
            }
            Ok(WriterEnd::Cancelled) => {}
            Err(e) => writer_shared.close(CloseReason::Transport(e.to_string())),
        }
    });

    let reader_shared = shared.clone();
    let weak_acks = acks.downgrade();
    spawn(async move {
        let cancel = reader_shared.cancel.clone();
        match read_loop(&reader_shared, &mut reader, &weak_acks, &cancel).await {
            ReadEnd::Cancelled => {}
            ReadEnd::Eof => reader_shared.close(CloseReason::Transport(
                "server closed the connection".into(),
            )),
            ReadEnd::Failed(reason) | ReadEnd::Close(reason) => reader_shared.close(reason),
        }
    });

    let control = link.control.clone();
    Ok(Established {
        link: Link::Stream(link),
        shared,
        control,
        connack,
        remote,
        transport: options.transport,
        fell_back: None,
    })
}

/// tokio-rustls reports handshake failures as I/O errors; keep them recognisable as TLS.
fn tls_error(e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls(tls.clone()),
        None => Error::Io(e),
    }
}

/// The writer's queues, highest priority first. Acks ride just behind control: they are tiny and
/// hold up the server's in-flight window while they wait. Ties keep control > telemetry > file.
fn order_levels<T>(p: Priorities, control: T, acks: T, telemetry: T, file: T) -> Vec<T> {
    let mut levels = [
        (p.control, 0, control),
        (p.control, 1, acks),
        (p.telemetry, 2, telemetry),
        (p.file, 3, file),
    ];
    levels.sort_by_key(|&(prio, rank, _)| (std::cmp::Reverse(prio), rank));
    levels.into_iter().map(|(_, _, q)| q).collect()
}

impl StreamLink {
    pub(crate) fn channel(&self, kind: ChannelKind) -> ChannelTx {
        match kind {
            ChannelKind::Control => self.control.clone(),
            ChannelKind::Telemetry => self.telemetry.clone(),
            ChannelKind::File => self.file.clone(),
        }
    }

    pub(crate) async fn shutdown(&self, shared: &Shared, control: &ChannelTx, disconnect: Bytes) {
        // The control queue goes first, so wait until telemetry and file data queued so far are
        // written before the DISCONNECT can overtake them.
        let mut written = Vec::new();
        for tx in [&self.telemetry, &self.file] {
            let (done, wait) = oneshot::channel();
            if tx.data.send(Outgoing::Barrier(done)).await.is_ok() {
                written.push(wait);
            }
        }
        let _ = tokio::time::timeout(DRAIN_WAIT, futures::future::join_all(written)).await;
        let (done, wait) = oneshot::channel();
        if control
            .data
            .send(Outgoing::Packet(disconnect))
            .await
            .is_ok()
            && control.data.send(Outgoing::Finish(done)).await.is_ok()
        {
            let _ = tokio::time::timeout(DRAIN_WAIT, wait).await;
        }
        shared.close(CloseReason::Local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_priorities_order_control_acks_telemetry_file() {
        let order = order_levels(
            Priorities::default(),
            "control",
            "acks",
            "telemetry",
            "file",
        );
        assert_eq!(order, ["control", "acks", "telemetry", "file"]);
    }

    #[test]
    fn configured_priorities_reorder_queues() {
        let p = Priorities {
            control: 5,
            telemetry: 0,
            file: 3,
        };
        let order = order_levels(p, "control", "acks", "telemetry", "file");
        assert_eq!(order, ["control", "acks", "file", "telemetry"]);
        let tie = Priorities {
            control: 1,
            telemetry: 1,
            file: 1,
        };
        let order = order_levels(tie, "control", "acks", "telemetry", "file");
        assert_eq!(order, ["control", "acks", "telemetry", "file"]);
    }
}
