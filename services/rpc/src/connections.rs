//! The connections a gRPC server admits: at most `max_connections` at once (one more is
//! closed as soon as it is accepted), and each closed once its peer has sent nothing for
//! `idle` (a socket opened and left silent, a handshake never finished). A live client
//! is never silent that long: the server pings every idle connection (HTTP/2 keepalive)
//! more often than that, and the client's acknowledgements are reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use umi_core::log_limit::{LogLimiter, REFUSAL_LOG_INTERVAL};

use crate::serve::Limits;

static REFUSED_LOG: LogLimiter = LogLimiter::new(REFUSAL_LOG_INTERVAL);

/// The connections `listener` accepts, within `limits`.
pub(crate) fn admitted(
    listener: TcpListener,
    limits: &Limits,
) -> impl Stream<Item = io::Result<Admitted>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let idle = limits.idle_timeout;
    TcpIncoming::from(listener)
        .with_keepalive(Some(limits.tcp_keepalive))
        .filter_map(move |accepted| {
            let admitted = match accepted {
                Err(e) => Some(Err(e)),
                Ok(stream) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(Ok(Admitted::new(stream, slot, idle))),
                    Err(_) => {
                        refused(&stream);
                        None
                    }
                },
            };
            futures::future::ready(admitted)
        })
}

/// One connection over the limit: closed (by dropping it), counted, logged at a rate.
fn refused(stream: &TcpStream) {
    metrics::counter!("umi_rpc_connections_refused_total").increment(1);
    if let Some(held_back) = REFUSED_LOG.admit() {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "an unknown peer".to_string(), |a| a.to_string());
        tracing::warn!(
            %peer,
            held_back,
            "closed a connection: the server holds as many as it admits (held_back: refusals not logged since the last warning)"
        );
    }
}

/// An admitted connection: holds its slot until closed, and fails its reads once the
/// peer has been silent for `idle` (the server then closes it).
pub(crate) struct Admitted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    silent_until: Pin<Box<Sleep>>,
}

impl Admitted {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        Admitted {
            stream,
            _slot: slot,
            idle,
            silent_until: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(read) => {
                let deadline = Instant::now() + this.idle;
                this.silent_until.as_mut().reset(deadline);
                Poll::Ready(read)
            }
            Poll::Pending => match this.silent_until.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer sent nothing for the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
