//! serve's listeners: a bounded number of connections (so file descriptors stay free for worker
//! restarts), each closed once idle, and accept errors (EMFILE above all) waited out instead of
//! retried in a tight loop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{http, Service};

/// File descriptors kept free of connections for everything else serve opens: workers started
/// and restarted (pipes, pidfds, their folders), model files, TLS files, logs.
pub const FD_RESERVE: u64 = 128;

/// The first wait after an accept error that means "out of descriptors or memory"; it doubles
/// up to [`MAX_ACCEPT_BACKOFF`] while the errors go on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot read RLIMIT_NOFILE: {0}")]
    Rlimit(io::Error),
    #[error("RLIMIT_NOFILE is {limit}, which leaves no file descriptor for connections once {FD_RESERVE} are kept for workers; raise it (ulimit -n) or give --max_connections")]
    TooFewFds { limit: u64 },
}

/// How many connections serve holds at once, and how long one may sit idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Over all listeners together; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection with no call in flight and no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

/// `asked`, or else what the soft RLIMIT_NOFILE allows after [`FD_RESERVE`].
pub fn max_connections(asked: Option<usize>) -> Result<usize, LimitError> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let room = limit.saturating_sub(FD_RESERVE);
    match asked {
        Some(asked) => {
            if asked as u64 > room {
                tracing::warn!("--max_connections {asked} leaves fewer than {FD_RESERVE} of RLIMIT_NOFILE's {limit} descriptors for workers: a restart may fail while the connections are open");
            }
            Ok(asked.max(1))
        }
        None if room == 0 => Err(LimitError::TooFewFds { limit }),
        None => Ok(usize::try_from(room).unwrap_or(usize::MAX)),
    }
}

/// One connection slot, shared by every listener.
#[derive(Clone)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl Slots {
    pub fn new(limits: ConnectionLimits) -> Slots {
        Slots {
            semaphore: Arc::new(Semaphore::new(limits.max_connections)),
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Accepts from `accept` while a slot is free, until the receiving side goes away. Each
    /// connection goes through `prepare` (a TLS handshake, say; `None` drops it) side by side
    /// with the others, holding its slot; `prepare` also says who the peer is (`cert:CN`,
    /// `uid:N`), if the connection tells.
    pub fn incoming<S, T, A, AF, P, PF>(
        &self,
        mut accept: A,
        prepare: P,
    ) -> ReceiverStream<io::Result<Connection<T>>>
    where
        S: Send + 'static,
        T: Send + 'static,
        A: FnMut() -> AF + Send + 'static,
        AF: Future<Output = io::Result<S>> + Send,
        P: Fn(S) -> PF + Send + Sync + 'static,
        PF: Future<Output = Option<(T, Option<Arc<str>>)>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        let slots = self.clone();
        let prepare = Arc::new(prepare);
        tokio::spawn(async move {
            let mut backoff = ACCEPT_BACKOFF;
            let mut failing = false;
            loop {
                // A full house waits here, not in accept: new clients queue in the kernel.
                let permit = tokio::select! {
                    _ = tx.closed() => return,
                    permit = slots.semaphore.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                let accepted = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = accept() => accepted,
                };
                let stream = match accepted {
                    Ok(stream) => {
                        if failing {
                            tracing::info!("accepting connections again");
                        }
                        failing = false;
                        backoff = ACCEPT_BACKOFF;
                        stream
                    }
                    Err(error) if out_of_resources(&error) => {
                        // Retrying at once would spin a core until a descriptor frees up.
                        if !failing {
                            tracing::warn!("accept: {error}; waiting before accepting again");
                        }
                        failing = true;
                        drop(permit);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        continue;
                    }
                    Err(error) => {
                        // One client's trouble (it reset the connection, say).
                        tracing::debug!("accept: {error}");
                        continue;
                    }
                };
                let prepare = prepare.clone();
                let tx = tx.clone();
                let idle_timeout = slots.idle_timeout;
                tokio::spawn(async move {
                    if let Some((io, peer)) = prepare(stream).await {
                        let connection = Connection::new(io, permit, idle_timeout, peer);
                        let _ = tx.send(Ok(connection)).await;
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Calls in flight on one connection, so that a long call does not count as idleness.
#[derive(Debug, Default)]
pub struct Activity {
    calls: AtomicUsize,
}

/// Held while a call runs.
pub struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What tonic (and the REST server) hands each request of a connection, in its extensions:
/// its calls in flight, and who the peer is if the connection says (a verified client
/// certificate's `cert:CN`, a Unix socket peer's `uid:N`).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    activity: Arc<Activity>,
    peer: Option<Arc<str>>,
}

impl ConnectionInfo {
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }
}

/// An accepted connection: it holds its slot until dropped, and reads end (EOF) once it has
/// been idle for the timeout with no call in flight.
pub struct Connection<T> {
    io: T,
    activity: Arc<Activity>,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    peer: Option<Arc<str>>,
    _slot: OwnedSemaphorePermit,
}

impl<T> Connection<T> {
    fn new(
        io: T,
        slot: OwnedSemaphorePermit,
        idle_timeout: Duration,
        peer: Option<Arc<str>>,
    ) -> Connection<T> {
        Connection {
            io,
            activity: Arc::default(),
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            peer,
            _slot: slot,
        }
    }

    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            activity: self.activity.clone(),
            peer: self.peer.clone(),
        }
    }

    fn touch(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// Whether the connection has been idle for the timeout; otherwise the timer is armed.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            if self.activity.calls.load(Ordering::SeqCst) == 0 {
                return true;
            }
            self.touch();
        }
        false
    }
}

impl<T> tonic::transport::server::Connected for Connection<T> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending if this.idle_expired(cx) => {
                tracing::debug!("closing a connection idle for {:?}", this.idle_timeout);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if written.is_ready() {
            this.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if written.is_ready() {
            this.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The layer that counts each connection's calls in flight.
pub fn count_calls<S>(service: S) -> CountCalls<S> {
    CountCalls(service)
}

#[derive(Clone)]
pub struct CountCalls<S>(S);

impl<S, B> Service<http::Request<B>> for CountCalls<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request.extensions().get::<ConnectionInfo>().map(|info| {
            info.activity.calls.fetch_add(1, Ordering::SeqCst);
            CallGuard(info.activity.clone())
        });
        let call = self.0.call(request);
        Box::pin(async move {
            let result = call.await;
            drop(guard);
            result
        })
    }
}
