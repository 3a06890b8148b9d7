//! How a sandbox is started.

use std::path::PathBuf;
use std::time::Duration;

use tfsandbox_proto::transport::tuning;

use crate::error::{Error, Result};
use crate::gpu::{GpuSettings, Gpus};

/// The kind of sandbox a worker runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// A child process of the host; needs no daemon.
    #[default]
    Process,
    /// A container of the local Docker engine.
    Docker,
    /// gVisor's user-space kernel (`runsc run`, a child of the host); needs no daemon.
    Gvisor,
}

/// Limits and settings of the `process` runtime's sandbox.
#[derive(Debug, Clone)]
pub struct ProcessSettings {
    /// Size of the /tmp tmpfs in bytes.
    pub tmp_bytes: u64,
    /// RLIMIT_AS: the worker's address space. TensorFlow reserves far more than it touches.
    pub address_space_bytes: u64,
    /// RLIMIT_FSIZE: the largest file it may write (in /tmp).
    pub file_size_bytes: u64,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
    /// RLIMIT_NPROC (counted per user id across the host; threads count).
    pub nproc: u64,
    /// RLIMIT_CPU in seconds of CPU time over the worker's whole life; unset: none.
    pub cpu_seconds: Option<u64>,
    /// Protections allowed to be weaker than asked where the kernel lacks them.
    pub allow_weaker: Vec<tfsandbox_jailer::plan::Weaker>,
    /// The jailer binary. Unset: `tfsandbox-jailer` beside the worker.
    pub jailer_path: Option<PathBuf>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            tmp_bytes: 1 << 30,
            address_space_bytes: 8 << 30,
            file_size_bytes: 1 << 30,
            nofile: 1024,
            nproc: 4096,
            cpu_seconds: None,
            allow_weaker: Vec::new(),
            jailer_path: None,
        }
    }
}

/// Limits and settings of the `docker` runtime's containers.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// CPUs the container may use (fractions allowed).
    pub cpus: f64,
    /// Memory limit in bytes; swap is the same, so none beyond it.
    pub memory_bytes: i64,
    /// The most processes and threads the container may hold.
    pub pids_limit: i64,
    /// Size of the /tmp tmpfs in bytes.
    pub tmp_bytes: u64,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: i64,
    /// RLIMIT_NPROC, soft and hard (counted per user id across the host).
    pub nproc: i64,
    /// An image to run instead of the one built from the worker's closure.
    pub image: Option<String>,
    /// Show progress bars on stderr while the image is built and loaded.
    pub show_progress: bool,
    /// The engine's OCI runtime for the container (`HostConfig.runtime`): `runsc` where the
    /// engine has gVisor registered (`docker info` lists its runtimes); `None`: the engine's
    /// default. One the engine lacks fails the runtime's start, naming what it has.
    pub engine_runtime: Option<String>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            cpus: 1.0,
            memory_bytes: 4 << 30,
            pids_limit: 256,
            tmp_bytes: 1 << 30,
            nofile: 1024,
            nproc: 4096,
            image: None,
            show_progress: false,
            engine_runtime: None,
        }
    }
}

/// Limits and settings of the `gvisor` runtime's sandboxes.
#[derive(Debug, Clone)]
pub struct GvisorSettings {
    /// The `runsc` program.
    pub runsc_path: PathBuf,
    /// runsc's `--platform`: `ptrace` works everywhere; `kvm` needs /dev/kvm (it hangs on VMs
    /// without nested virtualisation), newer runsc builds have `systrap`.
    pub platform: String,
    /// Where each host process keeps its private runsc state and bundles.
    pub state_dir: PathBuf,
    /// Memory of the whole sandbox (gVisor's kernel and the worker), bounded by its cgroup.
    pub memory_bytes: i64,
    /// CPUs the sandbox may use, bounded by its cgroup's CFS quota.
    pub cpus: f64,
    /// Size of the /tmp tmpfs in bytes.
    pub tmp_bytes: u64,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: u64,
    /// RLIMIT_FSIZE, soft and hard.
    pub file_size_bytes: u64,
    /// RLIMIT_AS of the worker inside gVisor, whose kernel overcommits any mapping the cgroup
    /// would only bound once touched. TensorFlow reserves far more than it touches.
    pub address_space_bytes: u64,
}

impl Default for GvisorSettings {
    fn default() -> Self {
        GvisorSettings {
            runsc_path: "runsc".into(),
            platform: "ptrace".into(),
            state_dir: "/run/tfsandbox-gvisor".into(),
            memory_bytes: 4 << 30,
            cpus: 1.0,
            tmp_bytes: 1 << 30,
            nofile: 1024,
            file_size_bytes: 1 << 30,
            address_space_bytes: 8 << 30,
        }
    }
}

/// What one sandbox accepts; beyond each, a call fails with an error naming the limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest tensor, in bytes of content, a call may send or receive.
    pub max_tensor_bytes: usize,
    /// Models loaded at once.
    pub max_models: usize,
    /// Calls in flight at once; one more fails at once rather than queueing.
    pub max_concurrent_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_bytes: 512 << 20,
            max_models: 16,
            max_concurrent_calls: 256,
        }
    }
}

/// How a sandbox replaces a worker that died.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Restarts allowed within `window`; one more and the sandbox gives up (a crash loop).
    pub max_restarts: u32,
    pub window: Duration,
    /// The wait before a restart, doubled for each restart already in the window.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: RuntimeKind,
    /// The worker binary. Unset: `TFSANDBOX_WORKER`, else `tfsandbox-worker` beside this program.
    pub worker_path: Option<PathBuf>,
    /// The worker's log filter (its `TFSANDBOX_LOG`); its lines reach the host's log.
    pub worker_log: String,
    /// How long a worker may take to start and answer its first call.
    pub start_timeout: Duration,
    /// The deadline of a call that sets none of its own.
    pub call_timeout: Duration,
    /// How long a run past its deadline may keep going inside TensorFlow before the worker is
    /// killed and replaced (TensorFlow cannot interrupt every op).
    pub stuck_grace: Duration,
    /// How long `Sandbox::shutdown` lets calls in flight finish before it kills the worker.
    pub drain_timeout: Duration,
    /// The largest gRPC message either side may send.
    pub max_message_bytes: usize,
    pub limits: Limits,
    pub restart: RestartPolicy,
    /// Model folders the sandbox may load from. Runtimes that isolate the file system mount
    /// each, read-only, at `/models/<folder name>` and nothing else of the host.
    pub models: Vec<PathBuf>,
    pub process: ProcessSettings,
    pub docker: DockerSettings,
    pub gvisor: GvisorSettings,
    /// GPUs the worker may use (none by default) and the CUDA libraries it then runs on.
    pub gpu: GpuSettings,
    /// Capabilities a model may not use; the worker scans each model at load and refuses it
    /// before any session exists. Empty by default (`tfsandbox serve` denies more).
    pub op_policy: tfsandbox_scan::OpPolicy,
}

impl Config {
    /// Adds a model folder the sandbox may load from.
    pub fn with_model(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models.push(dir.into());
        self
    }

    /// Lets the worker use `gpus`, running on the CUDA libraries in `library_dir`
    /// (`.cache/libtensorflow-cuda/lib` after `scripts/setup-libtensorflow.sh --variant cuda`).
    pub fn with_gpus(mut self, gpus: Gpus, library_dir: impl Into<PathBuf>) -> Self {
        self.gpu = GpuSettings {
            gpus,
            library_dirs: vec![library_dir.into()],
        };
        self
    }

    /// The worker binary this config starts, or where it was looked for.
    pub fn resolve_worker_path(&self) -> Result<PathBuf> {
        const NAME: &str = "tfsandbox-worker";
        let mut candidates = Vec::new();
        if let Some(path) = &self.worker_path {
            candidates.push(path.clone());
        } else if let Some(path) = std::env::var_os("TFSANDBOX_WORKER") {
            candidates.push(PathBuf::from(path));
        } else if let Ok(exe) = std::env::current_exe() {
            // Beside this program; for a test binary in target/*/deps, one level up.
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(NAME));
                if let Some(up) = dir.parent() {
                    candidates.push(up.join(NAME));
                }
            }
        }
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or(Error::WorkerNotFound { looked: candidates })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime: RuntimeKind::default(),
            worker_path: None,
            worker_log: "info".into(),
            start_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
            stuck_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: tuning::DEFAULT_MAX_MESSAGE_BYTES,
            limits: Limits::default(),
            restart: RestartPolicy::default(),
            models: Vec::new(),
            process: ProcessSettings::default(),
            docker: DockerSettings::default(),
            gvisor: GvisorSettings::default(),
            gpu: GpuSettings::default(),
            op_policy: tfsandbox_scan::OpPolicy::default(),
        }
    }
}
