//! The one transport both sides speak: gRPC (tonic) on yamux streams over a byte pipe pair.
//!
//! The pipe pair is the worker's stdin/stdout: child pipes for the `process` and `gvisor`
//! runtimes, two FIFOs for `docker` (its attach stream as the fallback). Each HTTP/2 connection is
//! one yamux stream; either side may open streams.
//!
//! yamux needs one task that owns the `Connection` and polls it without pause, or no stream makes
//! progress: [`Multiplexer::spawn`] starts that task and hands out an opener for outbound streams and
//! a receiver for inbound ones.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tonic::transport::server::{Connected, Router};
use tonic::transport::{Channel, Endpoint, Uri};

pub use yamux::Mode;

/// Flow-control settings of both layers, shared so the two ends agree.
///
/// HTTP/2 windows bound how much one call may have in flight before the peer reads it; yamux's
/// window does the same one layer down. Both start far above the protocol defaults (64 KiB and
/// 256 KiB), which cap a large tensor at one window per round trip over the pipe.
pub mod tuning {
    /// yamux: bytes in a data frame before it is split (default 16 KiB).
    pub const YAMUX_SPLIT_SEND_SIZE: usize = 256 * 1024;
    /// yamux: streams one side may hold open. gRPC uses one per HTTP/2 connection.
    pub const YAMUX_MAX_STREAMS: usize = 32;
    /// yamux: the total receive window over all streams; each stream's window grows up to it.
    /// It also bounds what the sending side may have queued (see `QueuedWriter`).
    pub const YAMUX_MAX_CONNECTION_WINDOW: usize = 64 * 1024 * 1024;
    /// HTTP/2: per-stream and per-connection receive windows.
    pub const H2_STREAM_WINDOW: u32 = 16 * 1024 * 1024;
    pub const H2_CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
    /// HTTP/2: the largest frame either side accepts, so sends (default 16 KiB). Every HTTP/2
    /// frame is at least one yamux frame of its own (its 9-byte header another), so at the
    /// default a 64 MiB message was 8192 yamux frames; at 1 MiB it is 320. It also bounds what
    /// h2 buffers of one frame from the peer, as yamux's own 1 MiB frame limit does.
    pub const H2_MAX_FRAME_BYTES: u32 = 1024 * 1024;
    /// What the connection reads from the pipe at once. yamux reads each frame's 12-byte header
    /// and then its body: unbuffered, two reads a frame. Bodies larger than this bypass the
    /// buffer, so large frames are not copied twice.
    pub const READ_BUFFER_BYTES: usize = 64 * 1024;
    /// The most a side holds written but not yet taken by its peer: the whole window an honest
    /// peer grants, and room for control frames.
    pub const MAX_QUEUED_WRITE_BYTES: usize = YAMUX_MAX_CONNECTION_WINDOW + 4 * 1024 * 1024;
    /// The pipes between host and worker, where the host makes them (default 64 KiB).
    pub const PIPE_BYTES: usize = 1024 * 1024;
    /// gRPC: the largest message either side accepts or sends by default.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;
}

/// What can go wrong below gRPC.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// yamux's own error stays the source; its type is not part of this API.
    #[error("the multiplexed connection failed: {0}")]
    Multiplexer(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the multiplexed connection is closed")]
    Closed,
    #[error("could not set up the gRPC channel: {0}")]
    Channel(#[from] tonic::transport::Error),
}

impl TransportError {
    fn multiplexer(error: yamux::ConnectionError) -> TransportError {
        TransportError::Multiplexer(Box::new(error))
    }
}

type OpenReply = oneshot::Sender<Result<yamux::Stream, TransportError>>;

/// Opens outbound yamux streams through the task that owns the connection. Cheap to clone.
#[derive(Clone)]
pub struct StreamOpener {
    requests: mpsc::UnboundedSender<OpenReply>,
}

impl StreamOpener {
    pub async fn open(&self) -> Result<GrpcIo, TransportError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| TransportError::Closed)?;
        let stream = answer.await.map_err(|_| TransportError::Closed)??;
        Ok(GrpcIo(stream.compat()))
    }
}

/// The running multiplexer: the opener, the inbound streams, and the driving task.
pub struct Multiplexer {
    pub opener: StreamOpener,
    pub inbound: mpsc::UnboundedReceiver<yamux::Stream>,
    /// Ends when the peer closes the pipe (`Ok`) or the connection breaks (`Err`).
    pub driver: JoinHandle<Result<(), TransportError>>,
}

impl Multiplexer {
    /// Starts the task that owns the yamux connection over `reader`/`writer`.
    pub fn spawn<R, W>(reader: R, writer: W, mode: Mode) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut config = yamux::Config::default();
        config
            .set_max_num_streams(tuning::YAMUX_MAX_STREAMS)
            .set_max_connection_receive_window(Some(tuning::YAMUX_MAX_CONNECTION_WINDOW))
            .set_split_send_size(tuning::YAMUX_SPLIT_SEND_SIZE);
        let (queued, writing) = QueuedWriter::spawn(writer);
        let reader = BufReader::with_capacity(tuning::READ_BUFFER_BYTES, reader);
        let io = tokio::io::join(reader, queued).compat();
        let connection = yamux::Connection::new(io, config, mode);

        let (requests, open_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let ended = drive(connection, open_rx, inbound_tx).await;
            if ended.is_err() {
                // A broken connection drains nothing: the writer may be stuck on a peer that
                // stopped reading, and would hold its end open for ever.
                writing.abort();
            }
            ended
        });
        Multiplexer {
            opener: StreamOpener { requests },
            inbound,
            driver,
        }
    }
}

/// Hands every write to a task that owns the real writer, so the connection never waits on a full
/// pipe.
///
/// yamux stops reading while a Pong it owes cannot be written. If both ends are blocked writing
/// (both directions saturated) and a Ping crosses, neither reads again: a deadlock (reported
/// upstream). Here writing never blocks, so reading never stops.
///
/// The queue is bounded without trusting the peer: an honest peer grants at most
/// `YAMUX_MAX_CONNECTION_WINDOW` of data, and the rest are small control frames; a peer that
/// floods pings, or grants a huge window, and does not read, fills the queue. Past
/// [`tuning::MAX_QUEUED_WRITE_BYTES`] (each write counted with its bookkeeping) writing fails, the
/// connection ends, and the host replaces such a worker.
struct QueuedWriter {
    queue: Option<mpsc::UnboundedSender<Bytes>>,
    queued: Arc<AtomicUsize>,
}

/// What one queued write costs beyond its bytes: the `Bytes` and the channel's slot.
const QUEUED_WRITE_OVERHEAD: usize = 64;

/// The most queued writes handed to one `writev`. yamux writes a frame's header and its body
/// separately, so a tiny call's frame is two writes; batched, it is one system call.
const WRITE_BATCH: usize = 64;

impl QueuedWriter {
    /// The writer, and the task that writes what it queues.
    fn spawn<W: AsyncWrite + Unpin + Send + 'static>(mut writer: W) -> (QueuedWriter, AbortHandle) {
        let (queue, mut pending) = mpsc::unbounded_channel::<Bytes>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = queued.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while pending.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                // An error means the peer is gone; the connection learns it from the read side.
                if write_batch(&mut writer, &mut batch, &written)
                    .await
                    .is_err()
                    || writer.flush().await.is_err()
                {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        let writer = QueuedWriter {
            queue: Some(queue),
            queued,
        };
        (writer, task.abort_handle())
    }
}

/// Writes `batch` (emptying it) with as few vectored writes as the writer takes, giving back each
/// write's cost to the queue's count as it is written.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut Vec<Bytes>,
    queued: &AtomicUsize,
) -> io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
        let count = (batch.len() - first).min(WRITE_BATCH);
        for (slice, chunk) in slices.iter_mut().zip(&batch[first..]) {
            *slice = IoSlice::new(chunk);
        }
        let mut n = writer.write_vectored(&slices[..count]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let chunk = &mut batch[first];
            if n < chunk.len() {
                chunk.advance(n);
                queued.fetch_sub(n, Ordering::Relaxed);
                break;
            }
            n -= chunk.len();
            queued.fetch_sub(chunk.len() + QUEUED_WRITE_OVERHEAD, Ordering::Relaxed);
            first += 1;
        }
    }
    batch.clear();
    Ok(())
}

impl AsyncWrite for QueuedWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            // Queued, it would be an empty slice that the batch's writes never get past.
            return Poll::Ready(Ok(0));
        }
        let cost = buf.len() + QUEUED_WRITE_OVERHEAD;
        let queued = self.queued.fetch_add(cost, Ordering::Relaxed);
        if queued + cost > tuning::MAX_QUEUED_WRITE_BYTES {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::other(format!(
                "the peer has left {queued} bytes unread (the limit is {}): it is not reading",
                tuning::MAX_QUEUED_WRITE_BYTES
            ))));
        }
        let sent = self
            .queue
            .as_ref()
            .is_some_and(|q| q.send(Bytes::copy_from_slice(buf)).is_ok());
        if sent {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The writer task shuts the real writer once it has written what is queued.
        self.queue.take();
        Poll::Ready(Ok(()))
    }
}

/// Polls the connection until it ends: opens streams on request, hands over inbound ones.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut open_rx: mpsc::UnboundedReceiver<OpenReply>,
    inbound_tx: mpsc::UnboundedSender<yamux::Stream>,
) -> Result<(), TransportError>
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: Option<OpenReply> = None;
    let mut openers_gone = false;
    poll_fn(|cx| {
        // Outbound: one request at a time, in order; a stream is handed over once yamux grants it.
        loop {
            if let Some(reply) = waiting.take() {
                match connection.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        // A caller that gave up simply drops its stream.
                        let _ = reply.send(result.map_err(TransportError::multiplexer));
                    }
                    Poll::Pending => {
                        waiting = Some(reply);
                        break;
                    }
                }
            }
            if openers_gone {
                break;
            }
            match open_rx.poll_recv(cx) {
                Poll::Ready(Some(reply)) => waiting = Some(reply),
                Poll::Ready(None) => openers_gone = true,
                Poll::Pending => break,
            }
        }
        // Inbound: this also drives all reading and writing of the connection.
        loop {
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // Nobody takes inbound streams on this side: dropping one closes it.
                    let _ = inbound_tx.send(stream);
                }
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Err(TransportError::multiplexer(error)))
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// A yamux stream as tokio IO, accepted by tonic's server and (wrapped in `TokioIo`) its client.
pub struct GrpcIo(Compat<yamux::Stream>);

impl Connected for GrpcIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for GrpcIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A gRPC server tuned for this transport: the HTTP/2 windows both sides use.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(tuning::H2_STREAM_WINDOW)
        .initial_connection_window_size(tuning::H2_CONNECTION_WINDOW)
        .max_frame_size(tuning::H2_MAX_FRAME_BYTES)
}

/// Serves `router` on every inbound stream until the peer closes the pipe.
///
/// `shutdown` ends serving early (for a signal, say); either way in-flight calls are drained.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    router: Router,
    shutdown: BoxFuture<'static, ()>,
) -> Result<(), TransportError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Multiplexer {
        inbound, driver, ..
    } = Multiplexer::spawn(reader, writer, Mode::Server);
    let incoming = UnboundedReceiverStream::new(inbound)
        .map(|stream| Ok::<_, io::Error>(GrpcIo(stream.compat())));
    let mut driver = driver;
    let mut ended = None;
    let mut signalled = false;
    router
        .serve_with_incoming_shutdown(incoming, async {
            tokio::select! {
                result = &mut driver => ended = Some(result),
                () = shutdown => signalled = true,
            }
        })
        .await?;
    // The server also returns once the inbound streams end, which they do when the connection
    // does: its result, an error included, is the driver's.
    let ended = match ended {
        Some(result) => result,
        None if !signalled => driver.await,
        None => {
            driver.abort();
            return Ok(());
        }
    };
    ended.unwrap_or(Err(TransportError::Closed))
}

/// A call's deadline as its `grpc-timeout` header states it ("<digits><unit>", per the gRPC
/// spec); a server hands it on so work stops when the caller stops waiting.
pub fn grpc_timeout<T>(request: &tonic::Request<T>) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC channel whose every connection is a new yamux stream over `reader`/`writer`.
///
/// Returns the channel and the task driving the connection; that task ends when the peer closes.
pub async fn connect<R, W>(
    reader: R,
    writer: W,
) -> Result<(Channel, JoinHandle<Result<(), TransportError>>), TransportError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Multiplexer { opener, driver, .. } = Multiplexer::spawn(reader, writer, Mode::Client);
    // The authority is never resolved: the connector below ignores it.
    let channel = Endpoint::from_static("http://worker.tfsandbox")
        .initial_stream_window_size(tuning::H2_STREAM_WINDOW)
        .initial_connection_window_size(tuning::H2_CONNECTION_WINDOW)
        .max_frame_size(tuning::H2_MAX_FRAME_BYTES)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let opener = opener.clone();
            async move { opener.open().await.map(TokioIo::new) }
        }))
        .await?;
    Ok((channel, driver))
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::AsyncWrite;

    /// A vectored writer that takes at most a few bytes per write, so every write is partial.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = 7;
            for buf in bufs {
                let n = buf.len().min(left);
                self.0.extend_from_slice(&buf[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(7 - left))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Partial vectored writes keep the order of the bytes, and every write's cost goes back.
    #[tokio::test]
    async fn a_batch_is_written_whole_and_in_order_through_partial_writes() {
        let chunks: Vec<&[u8]> = vec![b"header 12 b.", b"body", b"x", b"another frame's body"];
        let mut batch: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        let cost: usize = chunks
            .iter()
            .map(|c| c.len() + super::QUEUED_WRITE_OVERHEAD)
            .sum();
        let queued = AtomicUsize::new(cost);
        let mut writer = Trickle(Vec::new());
        super::write_batch(&mut writer, &mut batch, &queued)
            .await
            .unwrap();
        assert_eq!(writer.0, chunks.concat());
        assert!(batch.is_empty());
        assert_eq!(queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(
            super::grpc_timeout(&request),
            Some(Duration::from_millis(1500))
        );
    }
}
