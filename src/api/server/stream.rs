//! The TCP stream as hyper sees it, with the graceful close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::clock::ConnectionClock;

/// How long a closing connection reads what the client still sends, and how much of it.
const LINGER_TIME: Duration = Duration::from_secs(10);
const LINGER_BYTES: u64 = 256 << 20;

/// The TCP stream as hyper sees it: reads tell the clock that a request is coming, and
/// shutting down is the graceful close described in `server`'s documentation.
pub(super) struct ConnectionIo {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    /// Whether the last request's body was left (partly) unread.
    unread_body: Arc<AtomicBool>,
    linger: Option<Linger>,
}

impl ConnectionIo {
    pub(super) fn new(
        stream: TcpStream,
        clock: Arc<ConnectionClock>,
        unread_body: Arc<AtomicBool>,
    ) -> ConnectionIo {
        ConnectionIo {
            stream,
            clock,
            unread_body,
            linger: None,
        }
    }
}

/// The end of a closing connection: FIN sent, what the client still sends read and dropped.
struct Linger {
    fin_sent: bool,
    deadline: Pin<Box<Sleep>>,
    bytes_left: u64,
    scratch: Vec<u8>,
}

impl Linger {
    fn new() -> Linger {
        Linger {
            fin_sent: false,
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            bytes_left: LINGER_BYTES,
            scratch: vec![0; 64 << 10],
        }
    }

    /// Sends FIN, then reads until the client closes, fails, or a bound is reached.
    fn poll_close(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        if !self.fin_sent {
            if ready!(Pin::new(&mut *stream).poll_shutdown(cx)).is_err() {
                return Poll::Ready(());
            }
            self.fin_sent = true;
        }
        while self.bytes_left > 0 {
            if self.deadline.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut buf = ReadBuf::new(&mut self.scratch);
            match ready!(Pin::new(&mut *stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {
                    self.bytes_left = self.bytes_left.saturating_sub(buf.filled().len() as u64);
                }
                _ => break,
            }
        }
        Poll::Ready(())
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// hyper calls this once the last response is flushed: the graceful close when a request
    /// body was left unread, a plain FIN otherwise.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() && !this.unread_body.load(Ordering::Relaxed) {
            return Pin::new(&mut this.stream).poll_shutdown(cx);
        }
        let linger = this.linger.get_or_insert_with(Linger::new);
        ready!(linger.poll_close(&mut this.stream, cx));
        Poll::Ready(Ok(()))
    }
}
