//! tfsandbox-worker: the only program inside the sandbox.
//!
//! It serves `tfsandbox.v1.Worker` over gRPC on yamux streams on its stdin/stdout (or the FIFOs
//! the host names in its environment), runs the SavedModels it is told to load, and logs to
//! stderr. It exits when its protocol input closes.

use std::process::ExitCode;

use futures::FutureExt;
use tfsandbox_proto::transport::{self, tuning};
use tfsandbox_proto::v1::worker_server::WorkerServer;
use tfsandbox_worker::{service, stdio};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    // Before anything else can write to stdout.
    let fds = match stdio::take() {
        Ok(fds) => fds,
        Err(error) => {
            eprintln!("tfsandbox-worker: cannot take over stdin/stdout: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TFSANDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // TensorFlow runs on its own thread pools; the executor only moves bytes.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(fds)) {
        Ok(()) => {
            tracing::info!("the protocol input closed; exiting");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "worker failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(fds: (std::os::fd::OwnedFd, std::os::fd::OwnedFd)) -> Result<(), String> {
    let pipes = stdio::into_async(fds).map_err(|e| format!("stdin/stdout must be pipes: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let limit = max_message_bytes();
    let service = WorkerServer::new(service::WorkerService::new(limit))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let router = transport::server().add_service(service);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        tensorflow = %tensorflow::version().unwrap_or_default(),
        "worker ready"
    );
    let shutdown = async move {
        terminate.recv().await;
        tracing::info!("SIGTERM: draining calls");
    };
    transport::serve(pipes.input, pipes.output, router, shutdown.boxed())
        .await
        .map_err(|e| e.to_string())
}

/// The message limit the host gave (`TFSANDBOX_MAX_MESSAGE_BYTES`), else the default.
fn max_message_bytes() -> usize {
    let name = tfsandbox_proto::worker_env::MAX_MESSAGE_BYTES;
    match std::env::var(name).map(|v| v.parse::<usize>()) {
        Ok(Ok(limit)) => limit,
        Ok(Err(error)) => {
            tracing::warn!(%error, "{name} is not a number of bytes; using the default");
            tuning::DEFAULT_MAX_MESSAGE_BYTES
        }
        Err(_) => tuning::DEFAULT_MAX_MESSAGE_BYTES,
    }
}
