//! `tfsandbox serve`: TensorFlow Serving's gRPC API in front of sandboxed models, its flags named
//! like tensorflow_model_server's.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use tfsandbox_serve as serve;

use super::interrupted;
use super::sandbox::{sandbox_config, SandboxArgs};
use super::serve_flags;
use crate::out;

#[derive(clap::Args)]
#[command(
    after_help = "Every other flag of tensorflow_model_server is taken too (--flag=value or --flag value); one set to something not done here is refused, naming it and why. The README lists them."
)]
pub struct ServeArgs {
    /// The model's name in requests (ModelSpec.name).
    #[arg(long = "model_name", default_value = "default")]
    model_name: String,
    /// A folder of numbered version folders (`<base>/1/saved_model.pb`, ...); the highest
    /// version is served, and new ones are picked up while serving.
    #[arg(
        long = "model_base_path",
        required_unless_present_any = ["model_config_file", "version"]
    )]
    model_base_path: Option<PathBuf>,
    /// TensorFlow Serving's text-format model config (model_config_list { config { name,
    /// base_path, model_version_policy } ... }) for several models.
    #[arg(long = "model_config_file", conflicts_with = "model_base_path")]
    model_config_file: Option<PathBuf>,
    /// The gRPC port (0: any free port).
    #[arg(long, default_value_t = 8500)]
    port: u16,
    /// The address to listen on; loopback unless asked otherwise.
    #[arg(long = "grpc_address", default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Also listen on this Unix socket (plain gRPC, no TLS).
    #[arg(long = "grpc_socket_path", alias = "unix-socket")]
    unix_socket: Option<PathBuf>,
    /// The Unix socket's permission bits, in octal (set whatever the umask).
    #[arg(long = "grpc_socket_mode", default_value = "660", value_parser = parse_mode)]
    unix_socket_mode: u32,
    /// Seconds between scans of the base paths for new versions (0: only at start).
    #[arg(
        long = "file_system_poll_wait_seconds",
        alias = "poll-seconds",
        default_value_t = 1
    )]
    poll_seconds: u64,
    /// Sandboxes per model version; calls go to the least loaded.
    #[arg(long, default_value_t = 1)]
    sandboxes: usize,
    /// A PEM certificate chain: serve TLS on the TCP port (with --tls-key).
    #[arg(long = "tls-cert", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long = "tls-key", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Bearer tokens: lines `IDENTITY SHA256HEX` (the token's sha256; `#` comments). Needs
    /// --auth_policy_file; refused if group or others may write it.
    #[arg(long = "auth_tokens_file")]
    auth_tokens_file: Option<PathBuf>,
    /// JSON allow list: {"allow":[{"identity":"uid:1000","models":["m"],"methods":["Predict"]}]}.
    /// Once given, every call no rule allows is refused.
    #[arg(long = "auth_policy_file")]
    auth_policy_file: Option<PathBuf>,
    /// Listen beyond loopback with no authentication configured (refused otherwise).
    #[arg(long = "allow_unauthenticated_remote")]
    allow_unauthenticated_remote: bool,
    /// The most bytes one request's inputs (or one answer's outputs) may take in memory
    /// together, counted before anything is built; past it: RESOURCE_EXHAUSTED.
    #[arg(long = "max_request_bytes", default_value_t = 512 << 20)]
    max_request_bytes: usize,
    /// Load version folders that are symlinks; by default they are refused, since the
    /// folder a symlink points to would be mounted into the sandbox.
    #[arg(long = "follow_version_symlinks")]
    follow_version_symlinks: bool,
    /// Connections held at once over every listener; more clients wait in the kernel's
    /// backlog. Default: the soft RLIMIT_NOFILE less 128 descriptors kept for workers.
    #[arg(long = "max_connections")]
    max_connections: Option<usize>,
    /// Seconds a connection may sit with no call in flight and no traffic before it is
    /// closed (clients reconnect by themselves).
    #[arg(long = "idle_timeout", default_value_t = 300)]
    idle_timeout: u64,
    /// The memory the sandboxes of every served version may use together, in bytes (suffixes
    /// K, M, G), each counted at its bound (--memory times --sandboxes per version). A version
    /// that would pass it is not loaded (END, RESOURCE_EXHAUSTED); those serving keep serving.
    #[arg(long = "max_total_memory", value_name = "BYTES", value_parser = super::sandbox::parse_bytes)]
    max_total_memory: Option<u64>,
    /// Calls each sandbox runs at once; with --sandboxes, a model version's share of the host,
    /// which no other model's flood takes.
    #[arg(long = "max_calls_per_sandbox", default_value_t = tfsandbox::Limits::default().max_concurrent_calls)]
    max_calls_per_sandbox: usize,
    /// Calls that wait, first come first served, for one of those, each no longer than its
    /// deadline, as TensorFlow Serving's calls wait; one more is refused at once
    /// (RESOURCE_EXHAUSTED).
    #[arg(long = "max_queued_calls_per_sandbox", default_value_t = 1024)]
    max_queued_calls_per_sandbox: usize,
    /// Security events, one JSON object a line: versions loaded (with the folder's sha256)
    /// and refused, calls (with their request id) and calls refused, worker restarts, kills,
    /// limit hits, dropped log bytes. `-`: standard error. The file is appended to.
    #[arg(long = "audit_log", value_name = "PATH|-")]
    audit_log: Option<PathBuf>,
    #[command(flatten)]
    sandbox: SandboxArgs,
    // Boxed: the forty-odd flags would make every other command as large.
    #[command(flatten)]
    tf_serving: Box<serve_flags::TfServingFlags>,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let ServeArgs {
        model_name,
        model_base_path,
        model_config_file,
        port,
        address,
        unix_socket,
        unix_socket_mode,
        poll_seconds,
        sandboxes,
        tls_cert,
        tls_key,
        auth_tokens_file,
        auth_policy_file,
        allow_unauthenticated_remote,
        max_request_bytes,
        follow_version_symlinks,
        max_connections,
        idle_timeout,
        max_total_memory,
        max_calls_per_sandbox,
        max_queued_calls_per_sandbox,
        audit_log,
        sandbox,
        tf_serving,
    } = args;
    if tf_serving.version {
        out!(
            "TensorFlow ModelServer: tfsandbox {}",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    tf_serving.check()?;
    if tf_serving.rest_api_port != 0 && tf_serving.rest_api_port == port {
        bail!("--rest_api_port must be different than the one specified in --port ({port})");
    }
    let channel = serve_flags::parse_channel_arguments(&tf_serving.grpc_channel_arguments)?;
    let metrics_path = match tf_serving.monitoring_config_file.as_str() {
        "" => None,
        file => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("--monitoring_config_file {file}: {e}"))?;
            serve::monitoring_config(&text)
                .map_err(|e| anyhow::anyhow!("--monitoring_config_file {file}: {e}"))?
        }
    };
    if metrics_path.is_some() && tf_serving.rest_api_port == 0 {
        bail!("--monitoring_config_file: Prometheus counters are served on the REST port: give --rest_api_port");
    }
    let tls = match (tls_cert, tls_key, tf_serving.ssl_config_file.as_str()) {
        (Some(_), _, ssl) if !ssl.is_empty() => {
            bail!("give --ssl_config_file or --tls-cert/--tls-key, not both")
        }
        (Some(cert), Some(key), _) => {
            Some(serve::TlsSettings::from_files(&cert, &key).map_err(anyhow::Error::msg)?)
        }
        (_, _, "") => None,
        (_, _, ssl) => Some(
            serve::TlsSettings::from_ssl_config(std::path::Path::new(ssl))
                .map_err(|e| anyhow::anyhow!("--ssl_config_file: {e}"))?,
        ),
    };
    // Read once, at start: a change takes a restart, as with every other setting.
    let auth = serve::Authority::load(
        auth_tokens_file.as_deref(),
        auth_policy_file.as_deref(),
        tls.as_ref()
            .is_some_and(serve::TlsSettings::verifies_clients),
    )?;
    let audit = match &audit_log {
        Some(path) => serve::Audit::open(path)
            .map_err(|e| anyhow::anyhow!("--audit_log {}: {e}", path.display()))?,
        None => serve::Audit::none(),
    };
    let config_file_poll = match (&model_config_file, tf_serving.config_file_poll()) {
        (Some(file), Some(every)) => Some((file.clone(), every)),
        (None, Some(_)) => {
            // As in TensorFlow Serving, where only a config file is polled.
            tracing::warn!("--model_config_file_poll_wait_seconds without --model_config_file: nothing to poll");
            None
        }
        (_, None) => None,
    };
    let models = match (model_config_file, model_base_path) {
        (Some(file), _) => serve::read_model_config(&file)?,
        (None, Some(base_path)) => vec![serve::ModelConfig {
            name: model_name,
            base_path,
            policy: serve::VersionPolicy::default(),
            labels: Default::default(),
        }],
        (None, None) => bail!("give --model_base_path or --model_config_file"),
    };
    let policy = sandbox
        .deny_ops
        .clone()
        .unwrap_or_else(tfsandbox::OpPolicy::serve_default);
    let mut config = sandbox_config(sandbox, None)?;
    // Serve logs instead of drawing progress bars.
    if let tfsandbox::RuntimeConfig::Docker(docker) = &mut config.runtime {
        docker.progress = None;
    }
    config.op_policy = policy;
    let bundle = tf_serving.bundle()?;
    config.session = bundle.session;
    config.limits.max_concurrent_calls = max_calls_per_sandbox;
    config.limits.max_queued_calls = max_queued_calls_per_sandbox;
    let mut grpc = serve::GrpcSettings::new(config.max_message_bytes);
    grpc.max_receive_message_bytes = channel
        .max_receive_message_bytes
        .unwrap_or(grpc.max_receive_message_bytes);
    grpc.max_send_message_bytes = channel
        .max_send_message_bytes
        .unwrap_or(grpc.max_send_message_bytes);
    grpc.reuse_address = channel.reuse_address.unwrap_or(grpc.reuse_address);
    grpc.max_concurrent_streams = channel.max_concurrent_streams;
    grpc.keepalive_time = channel.keepalive_time;
    grpc.keepalive_timeout = channel.keepalive_timeout;
    grpc.max_connection_age = channel.max_connection_age;
    grpc.max_connection_age_grace = channel.max_connection_age_grace;
    let (load_threads, unload_threads) = tf_serving.load_threads();
    let options = serve::ServeOptions {
        models,
        config,
        sandboxes_per_version: sandboxes,
        poll: (poll_seconds > 0).then(|| std::time::Duration::from_secs(poll_seconds)),
        config_file_poll,
        load_retries: tf_serving.load_retries(),
        labels_for_unavailable: tf_serving.allow_version_labels_for_unavailable_models,
        load_threads,
        unload_threads,
        warmup: bundle.warmup,
        batching: bundle.batching,
        per_model_batching: bundle.per_model_batching,
        tcp: Some(std::net::SocketAddr::new(address, port)),
        unix_socket,
        tls,
        auth: std::sync::Arc::new(auth),
        allow_unauthenticated_remote,
        max_request_bytes,
        follow_version_symlinks,
        unix_socket_mode,
        connections: serve::ConnectionLimits {
            max_connections: serve::max_connections(max_connections)?,
            idle_timeout: channel
                .max_connection_idle
                .unwrap_or(std::time::Duration::from_secs(idle_timeout.max(1))),
        },
        tags: bundle.tags,
        max_total_memory,
        health: tf_serving.enable_grpc_healthcheck_service,
        answers: serve::AnswerOptions {
            method_name_check: tf_serving.enable_signature_method_name_check,
            tensor_content: tf_serving.enable_serialization_as_tensor_content,
        },
        grpc,
        rest: (tf_serving.rest_api_port != 0).then(|| serve::RestOptions {
            addr: std::net::SocketAddr::new(address, tf_serving.rest_api_port),
            timeout: u64::try_from(tf_serving.rest_api_timeout_in_ms)
                .ok()
                .filter(|&ms| ms > 0)
                .map(std::time::Duration::from_millis),
            concurrency: tf_serving.rest_api_threads(),
            metrics_path,
            cors: tf_serving.rest_api_enable_cors_support,
        }),
        audit,
    };
    let ready = |listening: &serve::Listening| {
        // Tests and scripts read these lines to learn the port (e.g. with --port 0).
        let mut stdout = std::io::stdout().lock();
        if let Some(addr) = listening.tcp {
            let _ = writeln!(stdout, "listening on {addr}");
        }
        if let Some(path) = &listening.unix_socket {
            let _ = writeln!(stdout, "listening on unix:{}", path.display());
        }
        if let Some(addr) = listening.rest {
            let scheme = if listening.tls { "https" } else { "http" };
            let _ = writeln!(stdout, "listening on {scheme}://{addr}");
        }
        let _ = stdout.flush();
    };
    let shutdown = async {
        let signal = interrupted().await;
        tracing::warn!("{signal}: finishing the calls in flight, then stopping");
    };
    serve::serve(options, ready, shutdown).await?;
    Ok(())
}

/// Permission bits in octal (`660`, `0660` or `0o660`).
fn parse_mode(text: &str) -> std::result::Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("'{text}' is not an octal mode of at most 777")),
    }
}
