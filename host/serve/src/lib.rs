//! `tfsandbox serve`: TensorFlow Serving's gRPC API in front of sandboxed models.
//!
//! Clients written for TensorFlow Serving (its Python `tensorflow-serving-api`, Go or Java stubs
//! generated from its protos) call `tensorflow.serving.PredictionService` and `ModelService`
//! unchanged; each model version runs in its own sandbox pool ([`versions`]). The server also
//! answers gRPC health checks and reflection, over TCP, a Unix socket, or both, with optional TLS
//! (mutual, with `client_verify`), and lets each caller call only what the policy allows
//! ([`auth`]).

pub mod audit;
pub mod auth;
mod authority;
mod batching;
pub mod client;
mod convert;
mod examples;
mod listen;
mod metrics;
mod model_config;
mod model_files;
mod models;
mod platform_config;
mod profiler;
pub mod proto;
mod rest;
mod service;
mod session_config;
mod text_format;
mod tls;
mod versions;
mod warmup;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::serving::model_service_server::ModelServiceServer;
use crate::proto::serving::prediction_service_server::PredictionServiceServer;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;

pub use audit::Audit;
pub use auth::{AuthError, Authority};
pub use batching::BatchingParameters;
pub use convert::ConvertError;
pub use listen::{max_connections, ConnectionLimits, LimitError};
pub use model_config::{monitoring_config, ConfigFileError};
pub use models::ConfigError;
pub use platform_config::{PlatformConfig, PlatformConfigError};
pub use service::AnswerOptions;
pub use session_config::{mixed_precision, SessionConfigError};
pub use tls::TlsSettings;
pub use versions::{LoadRetries, ModelConfig, VersionPolicy};

use models::Models;
use service::{RequestLimits, Serving};
use versions::LoadSettings;

use tfsandbox::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Invalid protobuf file: '{}'", .path.display())]
    ConfigFile {
        path: PathBuf,
        source: ConfigFileError,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nothing to listen on: give a port or a Unix socket")]
    NoListener,
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("refusing to listen on {addr} with no authentication: anyone who can reach it could call every model. Configure --auth_policy_file (with --auth_tokens_file) or --ssl_config_file with client_verify, listen on loopback, or give --allow_unauthenticated_remote")]
    UnauthenticatedRemote { addr: SocketAddr },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Models(#[from] ConfigError),
    #[error("Error parsing text-format tensorflow.serving.BatchingParameters in {}: {message}", .path.display())]
    Batching { path: PathBuf, message: String },
    #[error("Invalid protobuf file: '{}'", .path.display())]
    SessionConfig {
        path: PathBuf,
        source: SessionConfigError,
    },
    #[error("Invalid protobuf file: '{}'", .path.display())]
    PlatformConfig {
        path: PathBuf,
        source: PlatformConfigError,
    },
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub models: Vec<ModelConfig>,
    /// Sandbox settings; each version's folder is added to its own copy.
    pub config: Config,
    /// Sandboxes per model version.
    pub sandboxes_per_version: usize,
    /// How often the base paths are scanned for new versions; `None`: only at start.
    pub poll: Option<Duration>,
    /// How a version that failed to load is tried again.
    pub load_retries: LoadRetries,
    /// `--allow_version_labels_for_unavailable_models`.
    pub labels_for_unavailable: bool,
    /// `--num_load_threads` and `--num_unload_threads`: versions loaded, and shut down, at once;
    /// `None`: no bound.
    pub load_threads: Option<usize>,
    pub unload_threads: Option<usize>,
    /// `--enable_batching`: each version merges its Predict requests with these parameters.
    pub batching: Option<BatchingParameters>,
    /// `--enable_per_model_batching_parameters`: with batching, each version's own
    /// `batching_params.pbtxt` in place of `batching` (a version without one is not batched).
    pub per_model_batching: bool,
    /// `--enable_model_warmup`: each version's warmup requests are replayed this many times
    /// before it serves (`--num_request_iterations_for_warmup`); `None`: no warmup.
    pub warmup: Option<u32>,
    /// `--model_config_file` with `--model_config_file_poll_wait_seconds`: the file read again
    /// this often, its models put in place of the served ones when it has changed.
    pub config_file_poll: Option<(PathBuf, Duration)>,
    pub tcp: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    /// TLS on the TCP listeners (gRPC and REST); with a client CA, mutual.
    pub tls: Option<TlsSettings>,
    /// Who may call what; [`Authority::open`]: everyone, everything.
    pub auth: Arc<Authority>,
    /// Listen beyond loopback with nothing authenticated (refused otherwise).
    pub allow_unauthenticated_remote: bool,
    /// The most bytes a request's inputs, or an answer's outputs, may take in memory together.
    pub max_request_bytes: usize,
    /// Load version folders that are symlinks (refused otherwise).
    pub follow_version_symlinks: bool,
    /// The Unix socket's permission bits, whatever the umask.
    pub unix_socket_mode: u32,
    /// Connections held at once (over every listener) and how long one may sit idle.
    pub connections: ConnectionLimits,
    /// MetaGraph tags to load; empty: `serve`.
    pub tags: Vec<String>,
    /// The memory the sandboxes of every served version may use together, each counted at its
    /// bound (`Config::sandbox_memory_bytes`); a version that would pass it is not loaded, and
    /// shows as END with RESOURCE_EXHAUSTED. `None`: no bound.
    pub max_total_memory: Option<u64>,
    /// Serve the standard gRPC health service (`--enable_grpc_healthcheck_service`).
    pub health: bool,
    pub answers: AnswerOptions,
    pub grpc: GrpcSettings,
    /// TensorFlow Serving's REST API, on its own port.
    pub rest: Option<RestOptions>,
    /// `--audit_log`: where security events go, one JSON object a line ([`audit`]).
    pub audit: Arc<Audit>,
}

/// `--rest_api_port` and its settings.
#[derive(Debug, Clone)]
pub struct RestOptions {
    pub addr: SocketAddr,
    /// `--rest_api_timeout_in_ms`; `None`: none.
    pub timeout: Option<Duration>,
    /// `--rest_api_num_threads`: calls handled at once.
    pub concurrency: usize,
    /// `--monitoring_config_file`'s `prometheus_config { enable: true path: ... }`: the path the
    /// event counters are served on; `None`: not served.
    pub metrics_path: Option<String>,
    /// `--rest_api_enable_cors_support`.
    pub cors: bool,
}

/// The gRPC server's settings from `--grpc_channel_arguments`.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    /// The largest message taken from a client, and sent to one.
    pub max_receive_message_bytes: usize,
    pub max_send_message_bytes: usize,
    /// SO_REUSEADDR on the TCP listener.
    pub reuse_address: bool,
    pub max_concurrent_streams: Option<u32>,
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    /// Connections older than this are asked to go (GOAWAY), given the grace to finish calls.
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Option<Duration>,
}

impl GrpcSettings {
    /// The settings with both message limits at `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> GrpcSettings {
        GrpcSettings {
            max_receive_message_bytes: max_message_bytes,
            max_send_message_bytes: max_message_bytes,
            reuse_address: true,
            max_concurrent_streams: None,
            keepalive_time: None,
            keepalive_timeout: None,
            max_connection_age: None,
            max_connection_age_grace: None,
        }
    }
}

/// Where the server listens, once it does.
#[derive(Debug, Clone)]
pub struct Listening {
    pub tcp: Option<SocketAddr>,
    pub rest: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    /// Whether the TCP listeners (gRPC and REST) speak TLS.
    pub tls: bool,
}

/// Loads every model (its served versions) and serves until `shutdown` completes; then stops
/// taking calls, lets the calls in flight finish and shuts every sandbox down. `ready` is called
/// once the listeners are bound and the models loaded.
pub async fn serve(
    options: ServeOptions,
    ready: impl FnOnce(&Listening),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if options.tcp.is_none() && options.unix_socket.is_none() {
        return Err(ServeError::NoListener);
    }
    let rest_addr = options.rest.as_ref().map(|r| r.addr);
    for addr in options.tcp.iter().chain(rest_addr.iter()) {
        if addr.ip().is_loopback() {
            continue;
        }
        // Loopback stays open by default, as before: only this host's users reach it, and the
        // Unix socket's mode already says which of them. Beyond it, open must be asked for.
        if !options.auth.is_enforced() && !options.allow_unauthenticated_remote {
            return Err(ServeError::UnauthenticatedRemote { addr: *addr });
        }
        if options.tls.is_none() && options.auth.is_enforced() {
            tracing::warn!("{addr} is plain TCP beyond loopback: bearer tokens cross the network readable by anyone on the path; give --ssl_config_file");
        }
    }
    let tls = match &options.tls {
        Some(settings) => Some(tls::acceptors(settings).map_err(ServeError::Tls)?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let (stop_loads, stopping) = tokio::sync::watch::channel(false);
    let settings = LoadSettings {
        retries: options.load_retries,
        labels_for_unavailable: options.labels_for_unavailable,
        load_threads: options
            .load_threads
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
        unload_threads: options
            .unload_threads
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1)))),
        metrics,
        batching: options.batching,
        per_model_batching: options.per_model_batching,
        max_batch_bytes: options
            .max_request_bytes
            .min(options.config.max_message_bytes / 2),
        warmup: options.warmup.map(|iterations| warmup::Warmup {
            iterations,
            answering: service::Answering {
                limits: request_limits(&options),
                answers: options.answers,
            },
        }),
        stopping,
        config: options.config.clone(),
        sandboxes: options.sandboxes_per_version.max(1),
        drain_timeout: options.config.drain_timeout,
        follow_symlinks: options.follow_version_symlinks,
        tags: options.tags.clone(),
        budget: options.max_total_memory.map(versions::MemoryBudget::new),
        audit: options.audit.clone(),
    };
    // Subscribed before anything starts, so the first sandboxes' events are in it.
    // Also with no --audit_log: the Prometheus counters count the library's events.
    let follower = Some(options.audit.clone().follow(&options.config.events));

    // Bind first, so a taken port fails before minutes of model loading.
    let tcp = match options.tcp {
        Some(addr) => Some(
            bind_tcp(addr, options.grpc.reuse_address).map_err(|source| ServeError::Listen {
                what: addr.to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let rest =
        match &options.rest {
            Some(rest) => Some(bind_tcp(rest.addr, options.grpc.reuse_address).map_err(
                |source| ServeError::Listen {
                    what: format!("{} (REST)", rest.addr),
                    source,
                },
            )?),
            None => None,
        };
    let unix = match &options.unix_socket {
        Some(path) => {
            // A socket file left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            Some(bind_unix(path, options.unix_socket_mode).map_err(|source| {
                ServeError::Listen {
                    what: path.display().to_string(),
                    source,
                }
            })?)
        }
        None => None,
    };

    let models = Arc::new(Models::new(settings, stop_loads));
    let result = run(
        &options,
        Listeners { tcp, unix, rest },
        tls,
        models.clone(),
        ready,
        shutdown,
    )
    .await;
    models.stop().await;
    if let Some(path) = &options.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    if let Some(follower) = follower {
        // What the sandboxes sent while stopping is written before serve returns.
        tokio::time::sleep(Duration::from_millis(50)).await;
        follower.abort();
    }
    result
}

/// The sockets bound before loading.
struct Listeners {
    tcp: Option<tokio::net::TcpListener>,
    unix: Option<tokio::net::UnixListener>,
    rest: Option<tokio::net::TcpListener>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    options: &ServeOptions,
    listeners: Listeners,
    tls: Option<(TlsAcceptor, TlsAcceptor)>,
    models: Arc<Models>,
    ready: impl FnOnce(&Listening),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // TensorFlow Serving also loads every model before it answers.
    models.apply(options.models.clone()).await?;

    let poller = options.poll.map(|every| {
        let models = models.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                models.sync().await;
            }
        })
    });
    let config_poller = options
        .config_file_poll
        .clone()
        .map(|(path, every)| tokio::spawn(poll_config_file(models.clone(), path, every)));

    let serving = Serving::new(
        models.clone(),
        request_limits(options),
        options.answers,
        options.auth.clone(),
        options.audit.clone(),
        models.metrics(),
    );
    let grpc = &options.grpc;
    let (receive, send) = (grpc.max_receive_message_bytes, grpc.max_send_message_bytes);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PredictionServiceServer<Serving>>()
        .await;
    health.set_serving::<ModelServiceServer<Serving>>().await;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(crate::proto::serving::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let router = || {
        let mut builder = Server::builder();
        if let Some(age) = grpc.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        if let Some(grace) = grpc.max_connection_age_grace {
            builder = builder.max_connection_age_grace(grace);
        }
        builder
            .max_concurrent_streams(grpc.max_concurrent_streams)
            .http2_keepalive_interval(grpc.keepalive_time)
            .http2_keepalive_timeout(grpc.keepalive_timeout)
            .layer(audit::RequestIdLayer(options.audit.clone()))
            .layer(tower::layer::layer_fn(listen::count_calls))
            .layer(auth::authenticate_layer(
                options.auth.clone(),
                options.audit.clone(),
            ))
            .add_service(
                PredictionServiceServer::new(serving.clone())
                    .max_decoding_message_size(receive)
                    .max_encoding_message_size(send),
            )
            .add_service(
                ModelServiceServer::new(serving.clone())
                    .max_decoding_message_size(receive)
                    .max_encoding_message_size(send),
            )
            // As in TensorFlow Serving, health is only answered when asked for.
            .add_optional_service(options.health.then(|| health_service.clone()))
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(profiler::NoProfiler)
    };

    let Listeners { tcp, unix, rest } = listeners;
    let listening = Listening {
        tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
        rest: rest.as_ref().and_then(|l| l.local_addr().ok()),
        unix_socket: unix.as_ref().and(options.unix_socket.clone()),
        tls: tls.is_some(),
    };
    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    type ServerFuture =
        std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;
    let mut servers: Vec<ServerFuture> = Vec::new();
    let slots = listen::Slots::new(options.connections);
    if let Some(listener) = tcp {
        let listener = Arc::new(listener);
        let accept = move || {
            let listener = listener.clone();
            async move {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(stream)
            }
        };
        match tls.clone() {
            Some((acceptor, _)) => {
                let incoming =
                    slots.incoming(accept, move |tcp| tls::handshake(acceptor.clone(), tcp));
                servers.push(Box::pin(
                    router().serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
                ));
            }
            None => {
                let incoming = slots.incoming(accept, |tcp| async move { Some((tcp, None)) });
                servers.push(Box::pin(
                    router().serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
                ));
            }
        }
    }
    if let Some(listener) = unix {
        // A Unix socket is local: TLS there would only cost, so it is plain.
        let listener = Arc::new(listener);
        let accept = move || {
            let listener = listener.clone();
            async move { Ok(listener.accept().await?.0) }
        };
        // gRPC Python's and Java's authority there, the socket's path, is made one h2 takes.
        // The peer's uid is the kernel's (SO_PEERCRED), taken as it connected.
        let incoming = slots.incoming(accept, |stream: tokio::net::UnixStream| async move {
            let peer = match stream.peer_cred() {
                Ok(cred) => Some(Arc::from(format!("uid:{}", cred.uid()))),
                Err(error) => {
                    tracing::warn!("SO_PEERCRED on a Unix connection: {error}");
                    None
                }
            };
            Some((authority::UnixAuthority::new(stream), peer))
        });
        let server = router().serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        servers.push(Box::pin(server));
    }
    let rest_server = match (rest, &options.rest) {
        (Some(listener), Some(settings)) => {
            let router = rest::Rest::new(
                serving.clone(),
                settings.timeout,
                options.max_request_bytes,
                settings.concurrency,
                settings.metrics_path.clone(),
                settings.cors,
            )
            .router();
            let addr = listener.local_addr().map_err(|source| ServeError::Listen {
                what: "the REST port".to_string(),
                source,
            })?;
            let listener = Arc::new(listener);
            let accept = move || {
                let listener = listener.clone();
                async move {
                    let (stream, _) = listener.accept().await?;
                    // An answer is not held back waiting for the client's delayed ACK.
                    stream.set_nodelay(true)?;
                    Ok(stream)
                }
            };
            let stop = stopped(stop_rx.clone());
            Some(match tls {
                Some((_, acceptor)) => {
                    let incoming =
                        slots.incoming(accept, move |tcp| tls::handshake(acceptor.clone(), tcp));
                    serve_rest(rest::SlotListener { incoming, addr }, router, stop)
                }
                None => {
                    let incoming = slots.incoming(accept, |tcp| async move { Some((tcp, None)) });
                    serve_rest(rest::SlotListener { incoming, addr }, router, stop)
                }
            })
        }
        _ => None,
    };
    ready(&listening);
    let results = futures::future::join_all(servers).await;
    if let Some(server) = rest_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!("REST server: {error}"),
            Err(error) => tracing::warn!("REST server: {error}"),
        }
    }
    for poller in poller.into_iter().chain(config_poller) {
        poller.abort();
    }
    health
        .set_not_serving::<PredictionServiceServer<Serving>>()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

fn request_limits(options: &ServeOptions) -> RequestLimits {
    RequestLimits {
        max_request_bytes: options.max_request_bytes,
        max_tensor_bytes: options.config.limits.max_tensor_bytes,
    }
}

/// The REST server on `listener`, each request given its connection's identity.
fn serve_rest<T>(
    listener: rest::SlotListener<T>,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.into_make_service_with_connect_info::<listen::ConnectionInfo>();
    let server = axum::serve(listener, service).with_graceful_shutdown(stop);
    tokio::spawn(async move { server.await })
}

/// Clients past `--max_connections` wait in the kernel's queue, which is longer than the 128
/// tokio's `bind` asks for (the kernel caps it at net.core.somaxconn).
const TCP_BACKLOG: u32 = 1024;

fn bind_tcp(addr: SocketAddr, reuse_address: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(reuse_address)?;
    socket.bind(addr)?;
    socket.listen(TCP_BACKLOG)
}

/// A Unix socket at `path` with exactly `mode`. It is bound in a fresh private folder beside
/// `path`, given its mode there and then renamed into place, so no one can connect to it while
/// it still has the umask's mode.
fn bind_unix(path: &std::path::Path, mode: u32) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".tfsandbox-socket-")
        .tempdir_in(parent)?;
    // The rename would replace whatever is there; binding in place would have refused it.
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        ));
    }
    let staged = private.path().join("socket");
    let listener = tokio::net::UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

/// Reads `path` every `every` and, when its text has changed, puts its models in place of the
/// served ones. A file that cannot be read or parsed is logged and the models stay as they are,
/// as in TensorFlow Serving.
async fn poll_config_file(models: Arc<Models>, path: PathBuf, every: Duration) {
    let mut applied = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!("model config file {}: {error}", path.display());
                continue;
            }
        };
        if applied.as_deref() == Some(&text[..]) {
            continue;
        }
        let parsed = model_config::parse(&String::from_utf8_lossy(&text));
        applied = Some(text);
        let configs = match parsed {
            Ok(configs) => configs,
            Err(error) => {
                tracing::error!(
                    "model config file {}: {error}; the models served stay as they are",
                    path.display()
                );
                continue;
            }
        };
        tracing::info!("model config file {} changed: reloading", path.display());
        if let Err(error) = models.apply(configs).await {
            tracing::error!("reloading {}: {error}", path.display());
        }
    }
}

/// An operator's config file, whole.
fn read_text(path: &std::path::Path) -> Result<String, ServeError> {
    std::fs::read_to_string(path).map_err(|source| ServeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The parameters of a `--batching_parameters_file`.
pub fn read_batching_parameters(path: &std::path::Path) -> Result<BatchingParameters, ServeError> {
    let text = read_text(path)?;
    model_config::batching_parameters(&text).map_err(|message| ServeError::Batching {
        path: path.to_path_buf(),
        message,
    })
}

/// A `--tensorflow_session_config_file` (a text-format `tensorflow.ConfigProto`), serialized
/// for `tfsandbox::SessionConfig::config_proto`.
pub fn read_session_config(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    let text = read_text(path)?;
    session_config::encode(&text).map_err(|source| ServeError::SessionConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// A `--platform_config_file`.
pub fn read_platform_config(path: &std::path::Path) -> Result<PlatformConfig, ServeError> {
    let text = read_text(path)?;
    platform_config::parse(&text).map_err(|source| ServeError::PlatformConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// The models of a `--model_config_file`.
pub fn read_model_config(path: &std::path::Path) -> Result<Vec<ModelConfig>, ServeError> {
    let text = read_text(path)?;
    model_config::parse(&text).map_err(|source| ServeError::ConfigFile {
        path: path.to_path_buf(),
        source,
    })
}
