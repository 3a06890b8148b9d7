//! The flags every command that starts a sandbox takes, and the sandbox's config made from them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use tfsandbox::{Config, RuntimeConfig, RuntimeKind, Sandbox};

/// A one-shot run of an untrusted model ends on its own.
const DEFAULT_RUN_TIMEOUT_SECONDS: f64 = 60.0;

/// `--runtime`: the library's names, listed in `--help`.
fn runtime_parser() -> impl clap::builder::TypedValueParser<Value = RuntimeKind> {
    clap::builder::PossibleValuesParser::new(RuntimeKind::ALL.map(RuntimeKind::name)).map(|name| {
        name.parse::<RuntimeKind>()
            .expect("a name the library listed")
    })
}

#[derive(clap::Args)]
pub struct SandboxArgs {
    /// The kind of sandbox.
    #[arg(long, value_parser = runtime_parser(), default_value = "process")]
    pub runtime: RuntimeKind,
    /// The worker binary (default: tfsandbox-worker beside this program).
    #[arg(long)]
    pub worker: Option<PathBuf>,
    /// GPUs the worker may use: none, all, or indices/UUIDs separated by commas.
    #[arg(long, default_value = "none")]
    pub gpus: tfsandbox::Gpus,
    /// Where the CUDA libtensorflow and nvidia libraries lie (with --gpus).
    #[arg(long, default_value = ".cache/libtensorflow-cuda/lib")]
    pub cuda_library_dir: PathBuf,
    /// Seconds a call may take before it is cancelled (and a worker that cannot stop is
    /// replaced). Default: 60 for run and inspect, Config's own for serve.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Memory the whole sandbox may use, in bytes (suffixes K, M, G), with no swap beyond it: its
    /// cgroup with the process and gvisor runtimes, the container's limit with docker. Default 4G.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// CPUs the whole sandbox may use (fractions allowed), a CFS quota. Default 1.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// The most processes and threads the whole sandbox may hold (with gvisor: the host threads
    /// of its kernel, which runs the worker's). Default 256.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Protections the process runtime may run without where this machine lacks them:
    /// `landlock` (an old kernel), `cgroup` (no cgroup offered to this host: memory, CPUs and pids
    /// then go unbounded as a whole). Default: none, and a start that cannot have them fails.
    /// The other runtimes weaken nothing, and take no notice.
    #[arg(
        long = "allow-weaker",
        env = "TFSANDBOX_ALLOW_WEAKER",
        value_name = "PROTECTION,...",
        value_delimiter = ','
    )]
    pub allow_weaker: Vec<tfsandbox::Weaker>,
    /// Capabilities a model may not use (see `tfsandbox scan`), e.g. file_read,network; `none`
    /// allows all. Default: none, but serve denies file_read, file_write, file_list, network,
    /// process_state and unknown_op.
    #[arg(long = "deny-ops", value_name = "CAPABILITY,...", value_parser = tfsandbox::OpPolicy::parse)]
    pub deny_ops: Option<tfsandbox::OpPolicy>,
}

/// `4G`, `512M`, `1024`: bytes, with binary suffixes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
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

/// A sandbox for one command; calls end after `--timeout`, 60 s unless given.
pub async fn start(mut args: SandboxArgs, model: Option<&std::path::Path>) -> Result<Sandbox> {
    args.timeout.get_or_insert(DEFAULT_RUN_TIMEOUT_SECONDS);
    Ok(Sandbox::start(sandbox_config(args, model)?).await?)
}

pub fn sandbox_config(args: SandboxArgs, model: Option<&std::path::Path>) -> Result<Config> {
    let mut config = Config {
        runtime: args.runtime.into(),
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
    if let Some(cpus) = args.cpus {
        if cpus.is_nan() || cpus <= 0.0 {
            bail!("--cpus {cpus}: give a positive number");
        }
    }
    match &mut config.runtime {
        RuntimeConfig::Process(process) => {
            if let Some(bytes) = args.memory {
                process.memory_bytes = bytes;
                // TensorFlow reserves address space well beyond what it touches: the cgroup bounds
                // memory, RLIMIT_AS only what one process may map.
                process.address_space_bytes =
                    process.address_space_bytes.max(bytes.saturating_mul(2));
            }
            process.cpus = args.cpus.unwrap_or(process.cpus);
            process.pids = args.pids.unwrap_or(process.pids);
            process.allow_weaker = args.allow_weaker;
        }
        RuntimeConfig::Docker(docker) => {
            if let Some(pids) = args.pids {
                docker.pids_limit = i64::try_from(pids).context("--pids is too large")?;
            }
            if let Some(bytes) = args.memory {
                docker.memory_bytes =
                    i64::try_from(bytes).context("--memory is too large for the engine")?;
            }
            docker.cpus = args.cpus.unwrap_or(docker.cpus);
            docker.progress = Some(crate::commands::image::progress_bars());
        }
        RuntimeConfig::Gvisor(gvisor) => {
            gvisor.pids = match args.pids {
                Some(pids) => i64::try_from(pids).context("--pids is too large for a cgroup")?,
                None => gvisor.pids,
            };
            if let Some(bytes) = args.memory {
                gvisor.memory_bytes =
                    i64::try_from(bytes).context("--memory is too large for a cgroup")?;
            }
            gvisor.cpus = args.cpus.unwrap_or(gvisor.cpus);
        }
    }
    if !args.gpus.is_none() {
        config = config.with_gpus(args.gpus, args.cuda_library_dir);
    }
    config
        .models
        .extend(model.map(std::path::Path::to_path_buf));
    Ok(config)
}
