//! The `tfsandbox` command.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::Value;
use tfsandbox::image::{self, Closure, Variant};
use tfsandbox::wire::{ModelMetadata, Signature};
use tfsandbox::{serve, tensor, Config, DType, Predict, RuntimeKind, Sandbox};

/// Prints a line to stdout; a reader that has gone (`| head`) ends the command quietly
/// instead of the panic `println!` would raise.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

#[derive(Parser)]
#[command(
    name = "tfsandbox",
    version,
    about = "Run TensorFlow SavedModels in a sandbox"
)]
struct Cli {
    /// More log lines on stderr (-v: info, -vv: debug), the worker's included.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct SandboxArgs {
    /// The kind of sandbox.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Process)]
    runtime: RuntimeKind,
    /// The worker binary (default: tfsandbox-worker beside this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// GPUs the worker may use: none, all, or indices/UUIDs separated by commas.
    #[arg(long, default_value = "none")]
    gpus: tfsandbox::Gpus,
    /// Where the CUDA libtensorflow and nvidia libraries lie (with --gpus).
    #[arg(long, default_value = ".cache/libtensorflow-cuda/lib")]
    cuda_library_dir: PathBuf,
    /// Seconds a call may take before it is cancelled (and a worker that cannot stop is
    /// replaced). Default: 60 for run and inspect, Config's own for serve.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Memory the worker may use, in bytes (suffixes K, M, G): the container's memory limit with
    /// docker, the sandbox's cgroup with gvisor, the address space (RLIMIT_AS) with the process
    /// runtime.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory: Option<u64>,
    /// CPUs the worker may use (fractions allowed); docker and gvisor only: the process runtime
    /// has no CPU quota, and refuses the flag rather than run unbounded.
    #[arg(long)]
    cpus: Option<f64>,
    /// Capabilities a model may not use (see `tfsandbox scan`), e.g. file_read,network; `none`
    /// allows all. Default: none, but serve denies file_read, file_write, file_list, network,
    /// process_state and unknown_op.
    #[arg(long = "deny-ops", value_name = "CAPABILITY,...", value_parser = tfsandbox::OpPolicy::parse)]
    deny_ops: Option<tfsandbox::OpPolicy>,
}

/// `4G`, `512M`, `1024`: bytes, with binary suffixes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a size like 4G, 512M or 1024"))
}

/// A one-shot run of an untrusted model ends on its own.
const DEFAULT_RUN_TIMEOUT_SECONDS: f64 = 60.0;

#[derive(Subcommand)]
enum Command {
    /// Run one signature of a SavedModel and print its outputs as JSON.
    Run {
        /// The SavedModel directory.
        #[arg(long)]
        model: PathBuf,
        /// An input as NAME=JSON (nested arrays; the dtype comes from the signature), or
        /// NAME=@FILE for a JSON or NumPy `.npy` file (large inputs). Repeatable.
        #[arg(long = "input", value_name = "NAME=JSON|@FILE")]
        inputs: Vec<String>,
        /// The signature to run.
        #[arg(long, default_value = "serving_default")]
        signature: String,
        /// Only these outputs. Repeatable.
        #[arg(long = "output", value_name = "NAME")]
        outputs: Vec<String>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Build the worker image, or list what goes into it.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Start a sandbox and print how it is confined, as the worker sees it from inside.
    InspectSandbox {
        /// A model folder to mount, as a real run would.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Start and stop, drop, and crash sandboxes in turn, then count what they left behind in
    /// this process: the last line reads `soak <runtime>: N cycles, leaked processes P,
    /// containers C, fds F, host RSS growth K KiB`.
    Soak {
        #[arg(long, default_value_t = 100)]
        cycles: u64,
        /// A model folder each cycle loads (unset: the worker alone).
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Measure the sandbox boundary against the bare limits (runs tfsandbox-bench, beside this
    /// program; `tfsandbox bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve models over TensorFlow Serving's gRPC API (PredictionService, ModelService), each
    /// model version in its own sandbox. Prints `listening on ADDRESS` lines once every model is
    /// loaded. Flags named like tensorflow_model_server's take the same values.
    Serve {
        /// The model's name in requests (ModelSpec.name).
        #[arg(long = "model_name", default_value = "default")]
        model_name: String,
        /// A folder of numbered version folders (`<base>/1/saved_model.pb`, ...); the highest
        /// version is served, and new ones are picked up while serving.
        #[arg(
            long = "model_base_path",
            required_unless_present = "model_config_file"
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
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// List what a SavedModel's ops can do (files, network, ...), read from its graph and every
    /// function in its library without running anything; fails if --deny-ops denies any of it.
    Scan {
        #[arg(long)]
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[arg(long = "deny-ops", value_name = "CAPABILITY,...", value_parser = tfsandbox::OpPolicy::parse)]
        deny_ops: Option<tfsandbox::OpPolicy>,
    },
    /// Print the signatures of a SavedModel, as loaded in a sandbox.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

#[derive(clap::Args)]
struct ClosureArgs {
    /// The worker binary (default: tfsandbox-worker beside this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Which libraries beyond DT_NEEDED the image carries.
    #[arg(long, value_enum, default_value_t = Variant::Cpu)]
    variant: Variant,
    /// A folder to find dlopen()ed libraries in (the CUDA variant's). Repeatable.
    #[arg(long = "library-dir")]
    library_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List every file of the worker's closure, why it is there, and its size.
    Closure {
        #[command(flatten)]
        closure: ClosureArgs,
    },
    /// Build the image archive (OCI layout, also loadable by `docker load`).
    Build {
        #[command(flatten)]
        closure: ClosureArgs,
        /// Where to write the archive (default: a temporary file, with --load).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Load it into the Docker engine (skipped when the engine has it already).
        #[arg(long)]
        load: bool,
    },
}

fn resolve_closure(args: &ClosureArgs) -> Result<Closure> {
    let config = Config {
        worker_path: args.worker.clone(),
        ..Config::default()
    };
    let worker = config.resolve_worker_path()?;
    let closure = Closure::resolve(&worker, args.variant, &args.library_dirs)?;
    let init = image::closure::init_beside(&worker);
    Ok(closure.with_init(&init, &args.library_dirs)?)
}

async fn image(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Closure { closure } => {
            let closure = resolve_closure(&closure)?;
            for entry in &closure.entries {
                out!(
                    "{:>12}  {:<48}  {}  <- {}",
                    entry.size,
                    entry.image_path,
                    entry.reason,
                    entry.host_path.display()
                );
            }
            out!(
                "{:>12}  total, {} files; entry point: {}",
                closure.total_size(),
                closure.entries.len(),
                closure.image_entrypoint().join(" ")
            );
        }
        ImageCommand::Build { closure, out, load } => {
            if out.is_none() && !load {
                bail!("nothing to do: give --out FILE, --load, or both");
            }
            let closure = resolve_closure(&closure)?;
            let reference = image::reference(&closure);
            let temporary;
            let path = match out {
                Some(path) => path,
                None => {
                    temporary = tempfile::Builder::new()
                        .prefix("tfsandbox-image-")
                        .suffix(".tar")
                        .tempfile()?;
                    temporary.path().to_path_buf()
                }
            };
            let built = image::build_archive(&closure, &reference, &path, true)?;
            out!("image {reference}");
            out!(
                "digest {} (config {})",
                built.manifest_digest,
                built.config_digest
            );
            out!(
                "archive {} bytes at {}; closure {} bytes",
                built.archive_size,
                path.display(),
                closure.total_size()
            );
            if load {
                let docker = bollard::Docker::connect_with_local_defaults()
                    .context("connecting to the Docker engine")?;
                if docker.inspect_image(&reference).await.is_ok() {
                    out!("the engine has {reference} already");
                } else {
                    image::load(&docker, &path, &built, &reference, true).await?;
                    out!("loaded {reference}");
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TFSANDBOX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let outcome = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                // serve stops on a signal by itself: it finishes the calls in flight first.
                if matches!(cli.command, Command::Serve { .. }) {
                    return run(cli.command).await;
                }
                // Interrupted, the sandbox is still shut down and its files removed on the way out.
                tokio::select! {
                    outcome = run(cli.command) => outcome,
                    signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
                }
            })
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if reader_gone(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// An input's value: JSON text, or `@FILE` holding JSON or a `.npy` array.
fn read_input(value: &str, dtype: DType) -> Result<tensor::Tensor> {
    let Some(path) = value.strip_prefix('@') else {
        let json: Value = serde_json::from_str(value).context("not JSON")?;
        return Ok(tensor::from_json(&json, dtype)?);
    };
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    if path.ends_with(".npy") {
        return Ok(tensor::from_npy(std::io::BufReader::new(file), dtype)?);
    }
    let json: Value = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{path} is not JSON"))?;
    Ok(tensor::from_json(&json, dtype)?)
}

/// Whether `error` is stdout's reader having gone away.
/// Permission bits in octal (`660`, `0660` or `0o660`).
fn parse_mode(text: &str) -> std::result::Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("'{text}' is not an octal mode of at most 777")),
    }
}

fn reader_gone(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A sandbox for one command; calls end after `--timeout`, 60 s unless given.
async fn start(mut args: SandboxArgs, model: Option<&std::path::Path>) -> Result<Sandbox> {
    args.timeout.get_or_insert(DEFAULT_RUN_TIMEOUT_SECONDS);
    Ok(Sandbox::start(sandbox_config(args, model)?).await?)
}

fn sandbox_config(args: SandboxArgs, model: Option<&std::path::Path>) -> Result<Config> {
    let mut config = Config {
        runtime: args.runtime,
        worker_path: args.worker,
        op_policy: args.deny_ops.unwrap_or_default(),
        ..Config::default()
    };
    if let Some(seconds) = args.timeout {
        config.call_timeout = std::time::Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|t| !t.is_zero())
            .with_context(|| format!("--timeout {seconds}: give a positive number of seconds"))?;
    }
    if let Some(bytes) = args.memory {
        config.process.address_space_bytes = bytes;
        config.docker.memory_bytes =
            i64::try_from(bytes).context("--memory is too large for the engine")?;
        config.gvisor.memory_bytes = config.docker.memory_bytes;
    }
    if let Some(cpus) = args.cpus {
        if args.runtime == RuntimeKind::Process {
            bail!("--cpus needs --runtime docker or gvisor: the process runtime has no CPU quota yet, and a limit that cannot apply is refused");
        }
        if cpus.is_nan() || cpus <= 0.0 {
            bail!("--cpus {cpus}: give a positive number");
        }
        config.docker.cpus = cpus;
        config.gvisor.cpus = cpus;
    }
    if !args.gpus.is_none() {
        config = config.with_gpus(args.gpus, args.cuda_library_dir);
    }
    config
        .models
        .extend(model.map(std::path::Path::to_path_buf));
    config.docker.show_progress = true;
    Ok(config)
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Run {
            model,
            inputs,
            signature,
            outputs,
            sandbox,
        } => {
            let sandbox = start(sandbox, Some(&model)).await?;
            let loaded = sandbox.load_model(&model).await?;
            let spec = find_signature(loaded.metadata(), &signature)?;
            let mut predict = Predict::default().signature(&signature).outputs(outputs);
            for input in &inputs {
                let (name, value) = input
                    .split_once('=')
                    .with_context(|| format!("--input '{input}' is not NAME=JSON or NAME=@FILE"))?;
                let dtype = input_dtype(spec, name)?;
                let tensor = read_input(value, dtype).with_context(|| format!("--input {name}"))?;
                predict.inputs.insert(name.to_string(), tensor);
            }
            let results = loaded.predict_with(predict).await?;
            let json: BTreeMap<String, Value> = results
                .iter()
                .map(|(k, t)| (k.clone(), tensor::to_json(t)))
                .collect();
            out!("{}", serde_json::to_string(&json)?);
            sandbox.shutdown().await;
        }
        Command::Image { command } => image(command).await?,
        Command::InspectSandbox {
            model,
            json,
            sandbox,
        } => {
            let sandbox = start(sandbox, model.as_deref()).await?;
            let info = sandbox.info().await?;
            let posture = info.posture.clone().unwrap_or_default();
            let report = serde_json::json!({
                "worker_version": info.worker_version,
                "tensorflow_version": info.tensorflow_version,
                "pid_inside": info.pid,
                "uid": info.uid,
                "gid": info.gid,
                "cap_effective": posture.cap_effective,
                "cap_permitted": posture.cap_permitted,
                "cap_bounding": posture.cap_bounding,
                "no_new_privs": posture.no_new_privs,
                "seccomp_modes_per_thread": posture.seccomp_modes,
                "landlock": posture.landlock,
                "network_interfaces": posture.network_interfaces,
                "root_read_only": posture.root_read_only,
                "visible_models": posture.visible_models,
                "mounts": posture.mounts,
                "rlimits": posture.rlimits,
                "namespaces": posture.namespaces,
                "gpus": info.gpus.iter().map(|g| serde_json::json!({
                    "name": g.name, "bus_id": g.bus_id, "tf_device": g.tf_device, "memory_bytes": g.memory_bytes,
                })).collect::<Vec<_>>(),
                "gpu_registered": info.gpu_registered,
            });
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else if let Value::Object(fields) = &report {
                for (key, value) in fields {
                    out!("{key:<26} {}", value);
                }
            }
            sandbox.shutdown().await;
        }
        Command::Bench { args } => {
            // The bench links TensorFlow for its in-process baseline; this program never does.
            let bench = std::env::current_exe()?.with_file_name("tfsandbox-bench");
            let mut command = tokio::process::Command::new(&bench);
            if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
                // TensorFlow's own start-up notes would bury the progress lines.
                command.env("TF_CPP_MIN_LOG_LEVEL", "2");
            }
            let status = command
                .args(args)
                .status()
                .await
                .with_context(|| format!("running {}", bench.display()))?;
            if !status.success() {
                bail!("{} ended with {status}", bench.display());
            }
        }
        Command::Soak {
            cycles,
            model,
            sandbox,
        } => {
            let config = sandbox_config(sandbox, model.as_deref())?;
            let bar = indicatif::ProgressBar::new(cycles).with_style(
                indicatif::ProgressStyle::with_template(
                    "soak {pos}/{len} cycles {wide_bar} {elapsed}",
                )?,
            );
            let report = tfsandbox::soak::run(&config, cycles, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            out!(
                "temp dirs left {}, runsc state left {}, {:.1} s in all",
                report.temp_dirs,
                report.runsc_state,
                report.elapsed.as_secs_f64()
            );
            out!("{}", report.line());
        }
        Command::Serve {
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
            max_request_bytes,
            follow_version_symlinks,
            max_connections,
            idle_timeout,
            sandbox,
        } => {
            let models = match (model_config_file, model_base_path) {
                (Some(file), _) => serve::read_model_config(&file)?,
                (None, Some(base_path)) => vec![serve::ModelConfig {
                    name: model_name,
                    base_path,
                    policy: serve::VersionPolicy::default(),
                }],
                (None, None) => bail!("give --model_base_path or --model_config_file"),
            };
            let policy = sandbox
                .deny_ops
                .clone()
                .unwrap_or_else(tfsandbox::OpPolicy::serve_default);
            let mut config = sandbox_config(sandbox, None)?;
            config.docker.show_progress = false;
            config.op_policy = policy;
            let options = serve::ServeOptions {
                models,
                config,
                sandboxes_per_version: sandboxes,
                poll: (poll_seconds > 0).then(|| std::time::Duration::from_secs(poll_seconds)),
                tcp: Some(std::net::SocketAddr::new(address, port)),
                unix_socket,
                tls: match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => Some(serve::TlsFiles { cert, key }),
                    _ => None,
                },
                max_request_bytes,
                follow_version_symlinks,
                unix_socket_mode,
                connections: serve::ConnectionLimits {
                    max_connections: serve::max_connections(max_connections)?,
                    idle_timeout: std::time::Duration::from_secs(idle_timeout.max(1)),
                },
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
                let _ = stdout.flush();
            };
            let shutdown = async {
                let signal = interrupted().await;
                tracing::warn!("{signal}: finishing the calls in flight, then stopping");
            };
            serve::serve(options, ready, shutdown).await?;
        }
        Command::Scan {
            model,
            json,
            deny_ops,
        } => {
            let report = tfsandbox::scan::scan_dir(&model, &[], &Default::default())?;
            if json {
                out!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                write!(std::io::stdout().lock(), "{}", report.render())?;
            }
            if let Some(policy) = deny_ops {
                policy.check(&report)?;
            }
        }
        Command::Inspect {
            model,
            json,
            sandbox,
        } => {
            let sandbox = start(sandbox, Some(&model)).await?;
            let loaded = sandbox.load_model(&model).await?;
            if json {
                out!(
                    "{}",
                    serde_json::to_string_pretty(&metadata_json(loaded.metadata()))?
                );
            } else {
                write!(
                    std::io::stdout().lock(),
                    "{}",
                    metadata_text(loaded.metadata())
                )?;
            }
            sandbox.shutdown().await;
        }
    }
    Ok(())
}

async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

fn find_signature<'a>(metadata: &'a ModelMetadata, name: &str) -> Result<&'a Signature> {
    match metadata.signatures.iter().find(|s| s.name == name) {
        Some(signature) => Ok(signature),
        None => {
            let names: Vec<&str> = metadata
                .signatures
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            bail!(
                "the model has no signature '{name}'; it has: {}",
                names.join(", ")
            )
        }
    }
}

fn input_dtype(signature: &Signature, name: &str) -> Result<DType> {
    let Some(spec) = signature.inputs.iter().find(|i| i.name == name) else {
        let names: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
        bail!(
            "signature '{}' has no input '{name}'; its inputs are: {}",
            signature.name,
            names.join(", ")
        );
    };
    DType::from_wire(spec.dtype).with_context(|| {
        format!(
            "input '{name}' has type {}, which tfsandbox does not carry",
            spec.tf_dtype
        )
    })
}

fn spec_text(spec: &tfsandbox::wire::TensorSpec) -> String {
    let dtype =
        DType::from_wire(spec.dtype).map_or_else(|| spec.tf_dtype.clone(), |d| d.to_string());
    let shape = if spec.unknown_rank {
        "unknown rank".to_string()
    } else {
        format!("{:?}", spec.shape)
    };
    format!("{}: {dtype} {shape}", spec.name)
}

fn metadata_text(metadata: &ModelMetadata) -> String {
    let mut out = format!(
        "model '{}' ({}), tags {:?}\n",
        metadata.model_id, metadata.path, metadata.tags
    );
    for signature in &metadata.signatures {
        out += &format!(
            "signature '{}' ({})\n",
            signature.name, signature.method_name
        );
        for spec in &signature.inputs {
            out += &format!("  in  {}\n", spec_text(spec));
        }
        for spec in &signature.outputs {
            out += &format!("  out {}\n", spec_text(spec));
        }
    }
    out
}

fn metadata_json(metadata: &ModelMetadata) -> Value {
    let specs = |specs: &[tfsandbox::wire::TensorSpec]| -> Value {
        specs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "dtype": DType::from_wire(s.dtype).map(|d| d.to_string()),
                    "tf_dtype": s.tf_dtype,
                    "shape": if s.unknown_rank { Value::Null } else { s.shape.clone().into() },
                })
            })
            .collect()
    };
    serde_json::json!({
        "model_id": metadata.model_id,
        "path": metadata.path,
        "tags": metadata.tags,
        "signatures": metadata.signatures.iter().map(|s| serde_json::json!({
            "name": s.name,
            "method_name": s.method_name,
            "inputs": specs(&s.inputs),
            "outputs": specs(&s.outputs),
        })).collect::<Vec<_>>(),
    })
}
