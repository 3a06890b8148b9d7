//! How a sandbox is started: the runtime with its settings, timeouts, limits, the restart policy,
//! GPUs and the op policy, checked by `Config::validate` before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use tfsandbox_proto::transport::tuning;

use crate::closure::{Closure, Variant};
use crate::error::GpuError;
use crate::error::{Error, Result};

/// The kind of sandbox a worker runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// A child process of the host; needs no daemon.
    #[default]
    Process,
    /// A container of the local Docker engine.
    Docker,
    /// gVisor's user-space kernel (`runsc run`, a child of the host); needs no daemon.
    Gvisor,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Process,
        RuntimeKind::Docker,
        RuntimeKind::Gvisor,
    ];

    /// The name `--runtime` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::Gvisor => "gvisor",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        RuntimeKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| Error::UnknownRuntime {
                name: name.to_owned(),
            })
    }
}

/// The runtime a sandbox starts in, with that runtime's settings: only the settings of the
/// runtime in use exist, so none can be set and silently ignored.
#[derive(Debug, Clone)]
pub enum RuntimeConfig {
    Process(ProcessSettings),
    Docker(DockerSettings),
    Gvisor(GvisorSettings),
}

impl RuntimeConfig {
    pub fn kind(&self) -> RuntimeKind {
        match self {
            RuntimeConfig::Process(_) => RuntimeKind::Process,
            RuntimeConfig::Docker(_) => RuntimeKind::Docker,
            RuntimeConfig::Gvisor(_) => RuntimeKind::Gvisor,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeKind::default().into()
    }
}

/// That runtime with its default settings.
impl From<RuntimeKind> for RuntimeConfig {
    fn from(kind: RuntimeKind) -> Self {
        match kind {
            RuntimeKind::Process => RuntimeConfig::Process(ProcessSettings::default()),
            RuntimeKind::Docker => RuntimeConfig::Docker(DockerSettings::default()),
            RuntimeKind::Gvisor => RuntimeConfig::Gvisor(GvisorSettings::default()),
        }
    }
}

/// The GPUs a sandbox may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Gpus {
    /// None: the worker sees no GPU device and no driver library (the default).
    #[default]
    None,
    /// Every GPU of the host.
    All,
    /// These GPUs: each an index (the device minor number, `/dev/nvidia<N>`) or a UUID
    /// (`GPU-...`, as `nvidia-smi -L` prints it).
    Devices(Vec<String>),
}

impl Gpus {
    pub fn is_none(&self) -> bool {
        matches!(self, Gpus::None) || matches!(self, Gpus::Devices(d) if d.is_empty())
    }
}

impl std::str::FromStr for Gpus {
    type Err = GpuError;

    /// `none`, `all`, or a comma-separated list of indices and UUIDs (`0,1`, `GPU-5c2e...`).
    fn from_str(text: &str) -> Result<Gpus, GpuError> {
        match text.trim() {
            "" | "none" => Ok(Gpus::None),
            "all" => Ok(Gpus::All),
            list => {
                let devices: Vec<String> = list.split(',').map(|d| d.trim().to_string()).collect();
                for device in &devices {
                    if !is_index(device) && !is_uuid(device) {
                        return Err(GpuError::BadDevice(device.clone()));
                    }
                }
                Ok(Gpus::Devices(devices))
            }
        }
    }
}

/// GPU settings of a sandbox.
#[derive(Debug, Clone, Default)]
pub struct GpuSettings {
    pub gpus: Gpus,
    /// Where the CUDA build of libtensorflow and the nvidia libraries lie
    /// (`scripts/setup-libtensorflow.sh --variant cuda` fills `.cache/libtensorflow-cuda/lib`).
    /// Searched before anything else for the worker's closure; needed when GPUs are asked for.
    /// Without GPUs, set it only to run on another libtensorflow than the worker's own RUNPATH
    /// names (the CUDA build then computes on the CPU).
    pub library_dirs: Vec<PathBuf>,
}

impl GpuSettings {
    /// The worker's closure: CUDA when GPUs are asked for; the library folders, if any, are
    /// searched first either way.
    pub fn closure(&self, worker: &std::path::Path) -> Result<Closure> {
        let variant = if self.gpus.is_none() {
            Variant::Cpu
        } else if self.library_dirs.is_empty() {
            return Err(GpuError::NoLibraryDirs.into());
        } else {
            Variant::Cuda
        };
        Ok(Closure::resolve_cached(
            worker,
            variant,
            &self.library_dirs,
        )?)
    }
}

pub(crate) fn is_index(device: &str) -> bool {
    !device.is_empty() && device.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(device: &str) -> bool {
    device.starts_with("GPU-")
        && device.len() > 4
        && device[4..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
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
    /// Memory of the whole sandbox, bounded by its own cgroup; swap is bounded to the same
    /// figure, so none.
    pub memory_bytes: u64,
    /// CPUs the whole sandbox may use, its cgroup's CFS quota (fractions allowed).
    pub cpus: f64,
    /// The most processes and threads the whole sandbox may hold (its cgroup's pids.max).
    pub pids: u64,
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
            memory_bytes: 4 << 30,
            cpus: 1.0,
            pids: 256,
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
    /// Told how building and loading the image goes (the command draws progress bars).
    #[cfg(feature = "docker")]
    pub progress: Option<crate::image::Progress>,
    /// The engine's OCI runtime for the container (`HostConfig.runtime`): `runsc` where the
    /// engine has gVisor registered (`docker info` lists its runtimes); `None`: the engine's
    /// default. One the engine lacks fails the runtime's start, naming what it has.
    pub engine_runtime: Option<String>,
    /// Where the protocol goes: two FIFOs bind-mounted into the container (the default), or the
    /// engine's attach stream. Attach is used anyway with an `engine_runtime` other than runc
    /// (gVisor's runsc of that era breaks bind-mounted host FIFOs) and where the FIFOs cannot be
    /// made.
    pub protocol: DockerProtocol,
}

/// How the host and a docker sandbox's worker carry the protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DockerProtocol {
    /// Two FIFOs the host makes in a private folder and bind-mounts at `/run/tfsandbox/in` and
    /// `/run/tfsandbox/out`: the kernel carries the bytes, the engine never sees them.
    #[default]
    Fifos,
    /// The container's attached stdin and stdout, through the engine (dockerd and
    /// containerd-shim copy every byte). For an engine that does not share this host's file
    /// system, or an image whose worker predates the FIFOs.
    Attach,
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
            #[cfg(feature = "docker")]
            progress: None,
            engine_runtime: None,
            protocol: DockerProtocol::default(),
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
    /// The most host processes and threads the sandbox may hold (its cgroup's pids.max): gVisor's
    /// kernel and gofer run the worker's threads on theirs.
    pub pids: i64,
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
            pids: 256,
            tmp_bytes: 1 << 30,
            nofile: 1024,
            file_size_bytes: 1 << 30,
            address_space_bytes: 8 << 30,
        }
    }
}

/// The `tensorflow.ConfigProto` every TensorFlow session of a worker is made with, the device
/// probe's included. TensorFlow makes its thread pools once per process, from the first
/// session's options, so these are the worker's, not a model's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionConfig {
    /// `intra_op_parallelism_threads`; 0: as `config_proto` has it (TensorFlow's default: one
    /// per core).
    pub intra_op_threads: u32,
    /// `inter_op_parallelism_threads`; 0: as `config_proto` has it.
    pub inter_op_threads: u32,
    /// `gpu_options.per_process_gpu_memory_fraction`, the share of each GPU's memory
    /// TensorFlow takes; 0: as `config_proto` has it (TensorFlow's default: nearly all).
    pub gpu_memory_fraction: f64,
    /// Functions marked for XLA (`jit_compile=True`) fail when they would compile, as in
    /// TensorFlow Serving without `--xla_cpu_compilation_enabled` (TensorFlow's
    /// `DisableXlaCompilation`, for the whole worker). Off: they compile, TensorFlow's default.
    pub disable_xla_compilation: bool,
    /// More of the `ConfigProto`, serialized (e.g. serve's `--tensorflow_session_config_file`);
    /// the fields above, where set, override its own. TensorFlow checks it when the worker
    /// makes its first session, and a load it refuses fails with TensorFlow's message.
    pub config_proto: Vec<u8>,
}

impl SessionConfig {
    /// The largest `config_proto` taken: it reaches the worker in its environment.
    pub const MAX_CONFIG_PROTO_BYTES: usize = 64 << 10;

    /// The whole `ConfigProto`, serialized: `config_proto`, then each field set above, which
    /// protobuf's parser lets override the same field of `config_proto`.
    pub fn to_config_proto(&self) -> Vec<u8> {
        use prost::encoding::{double, encode_key, encode_varint, WireType};
        let mut encoded = self.config_proto.clone();
        for (field, threads) in [(2, self.intra_op_threads), (5, self.inter_op_threads)] {
            if threads != 0 {
                encode_key(field, WireType::Varint, &mut encoded);
                encode_varint(threads.into(), &mut encoded);
            }
        }
        if self.gpu_memory_fraction != 0.0 {
            // gpu_options (6) { per_process_gpu_memory_fraction (1): double }
            let mut gpu_options = Vec::new();
            double::encode(1, &self.gpu_memory_fraction, &mut gpu_options);
            encode_key(6, WireType::LengthDelimited, &mut encoded);
            encode_varint(gpu_options.len() as u64, &mut encoded);
            encoded.extend_from_slice(&gpu_options);
        }
        encoded
    }
}

/// What one sandbox accepts; beyond each, a call fails with an error naming the limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest tensor, in bytes of content, a call may send or receive.
    pub max_tensor_bytes: usize,
    /// Models loaded at once.
    pub max_models: usize,
    /// Calls sent to the worker at once.
    pub max_concurrent_calls: usize,
    /// Calls that wait, first come first served, for one of `max_concurrent_calls`, each for no
    /// longer than its deadline; one more fails at once (`TooManyCalls`). 0: none wait.
    pub max_queued_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_bytes: 512 << 20,
            max_models: 16,
            max_concurrent_calls: 256,
            max_queued_calls: 0,
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
    /// The runtime and its settings.
    pub runtime: RuntimeConfig,
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
    /// The worker's TensorFlow session options, which every model of the sandbox shares.
    pub session: SessionConfig,
    pub limits: Limits,
    pub restart: RestartPolicy,
    /// Model folders the sandbox may load from. Runtimes that isolate the file system mount
    /// each, read-only, at `/models/<folder name>` and nothing else of the host.
    pub models: Vec<PathBuf>,
    /// GPUs the worker may use (none by default) and the CUDA libraries it then runs on.
    pub gpu: GpuSettings,
    /// Capabilities a model may not use; the worker scans each model at load and refuses it
    /// before any session exists. Empty by default (`tfsandbox serve` denies more).
    pub op_policy: tfsandbox_scan::OpPolicy,
    /// Where the sandbox's security events go ([`crate::Events::subscribe`]); clones of a
    /// config share one stream.
    pub events: crate::events::Events,
}

impl Config {
    /// Refuses a config that cannot work, naming the field and why, before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        let positive = [
            ("start_timeout", self.start_timeout),
            ("call_timeout", self.call_timeout),
            ("drain_timeout", self.drain_timeout),
            ("restart.window", self.restart.window),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return bad(field, "must be more than zero".into());
        }
        if self.restart.initial_backoff > self.restart.max_backoff {
            return bad(
                "restart.initial_backoff",
                format!(
                    "{:?} is more than restart.max_backoff ({:?})",
                    self.restart.initial_backoff, self.restart.max_backoff
                ),
            );
        }
        // Below this not even the worker's first answer (Info, with its posture) fits.
        const MIN_MESSAGE_BYTES: usize = 4 << 10;
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return bad(
                "max_message_bytes",
                format!(
                    "{} is less than {MIN_MESSAGE_BYTES}",
                    self.max_message_bytes
                ),
            );
        }
        if self.session.config_proto.len() > SessionConfig::MAX_CONFIG_PROTO_BYTES {
            return bad(
                "session.config_proto",
                format!(
                    "{} bytes is more than {}",
                    self.session.config_proto.len(),
                    SessionConfig::MAX_CONFIG_PROTO_BYTES
                ),
            );
        }
        // Only the wire format is checked here (every field skipped as unknown); TensorFlow
        // checks the fields themselves.
        if let Err(e) = <() as prost::Message>::decode(self.session.config_proto.as_slice()) {
            return bad(
                "session.config_proto",
                format!("not a serialized protobuf message: {e}"),
            );
        }
        let fraction = self.session.gpu_memory_fraction;
        if !(fraction.is_finite() && fraction >= 0.0) {
            return bad(
                "session.gpu_memory_fraction",
                format!("{fraction} is not a number from 0 up"),
            );
        }
        if self.limits.max_models == 0 {
            return bad("limits.max_models", "must be at least 1".into());
        }
        // tokio's semaphore holds at most this many permits.
        let max_calls = tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        if !(1..=max_calls).contains(&self.limits.max_concurrent_calls) {
            return bad(
                "limits.max_concurrent_calls",
                format!("must be from 1 to {max_calls}"),
            );
        }
        if self.limits.max_queued_calls > max_calls - self.limits.max_concurrent_calls {
            return bad(
                "limits.max_queued_calls",
                format!("with max_concurrent_calls, must come to at most {max_calls}"),
            );
        }
        match &self.runtime {
            RuntimeConfig::Process(process) => {
                let sizes = [
                    process.address_space_bytes,
                    process.nofile,
                    process.nproc,
                    process.memory_bytes,
                    process.pids,
                ];
                if sizes.contains(&0) {
                    return bad(
                        "process",
                        "address_space_bytes, nofile, nproc, memory_bytes and pids must be more \
                         than zero"
                            .into(),
                    );
                }
                if !(process.cpus.is_finite() && process.cpus > 0.0) {
                    return bad(
                        "process.cpus",
                        format!("{} is not a positive number", process.cpus),
                    );
                }
            }
            RuntimeConfig::Docker(docker) => {
                if !(docker.cpus.is_finite() && docker.cpus > 0.0) {
                    return bad(
                        "docker.cpus",
                        format!("{} is not a positive number", docker.cpus),
                    );
                }
                if docker.memory_bytes <= 0 || docker.pids_limit <= 0 {
                    return bad(
                        "docker",
                        "memory_bytes and pids_limit must be more than zero".into(),
                    );
                }
            }
            RuntimeConfig::Gvisor(gvisor) => {
                if !(gvisor.cpus.is_finite() && gvisor.cpus > 0.0) {
                    return bad(
                        "gvisor.cpus",
                        format!("{} is not a positive number", gvisor.cpus),
                    );
                }
                if gvisor.memory_bytes <= 0 || gvisor.pids <= 0 {
                    return bad(
                        "gvisor",
                        "memory_bytes and pids must be more than zero".into(),
                    );
                }
            }
        }
        Ok(())
    }

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

    /// The memory one sandbox of this config may use as a whole (its cgroup's or container's
    /// bound): what a budget over many sandboxes counts.
    pub fn sandbox_memory_bytes(&self) -> u64 {
        match &self.runtime {
            RuntimeConfig::Process(process) => process.memory_bytes,
            RuntimeConfig::Docker(docker) => docker.memory_bytes.unsigned_abs(),
            RuntimeConfig::Gvisor(gvisor) => gvisor.memory_bytes.unsigned_abs(),
        }
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
            runtime: RuntimeConfig::default(),
            worker_path: None,
            worker_log: "info".into(),
            start_timeout: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
            stuck_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: tuning::DEFAULT_MAX_MESSAGE_BYTES,
            session: SessionConfig::default(),
            limits: Limits::default(),
            restart: RestartPolicy::default(),
            models: Vec::new(),
            gpu: GpuSettings::default(),
            op_policy: tfsandbox_scan::OpPolicy::default(),
            events: crate::events::Events::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_setting() {
        assert_eq!("all".parse::<Gpus>().unwrap(), Gpus::All);
        assert_eq!("none".parse::<Gpus>().unwrap(), Gpus::None);
        assert_eq!(
            "0, GPU-5c2e1f3a-0000-1111-2222-333344445555"
                .parse::<Gpus>()
                .unwrap(),
            Gpus::Devices(vec![
                "0".into(),
                "GPU-5c2e1f3a-0000-1111-2222-333344445555".into()
            ])
        );
        assert!("../etc".parse::<Gpus>().is_err());
        assert!("0,".parse::<Gpus>().is_err());
    }

    #[test]
    fn the_default_config_is_valid_on_every_runtime() {
        for kind in RuntimeKind::ALL {
            let config = Config {
                runtime: kind.into(),
                ..Config::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn a_config_that_cannot_work_is_refused_naming_the_field() {
        type Spoil = fn(&mut Config);
        let cases: [(&str, Spoil); 8] = [
            ("call_timeout", |c| c.call_timeout = Duration::ZERO),
            ("restart.initial_backoff", |c| {
                c.restart.initial_backoff = Duration::from_secs(10)
            }),
            ("max_message_bytes", |c| c.max_message_bytes = 10),
            ("limits.max_concurrent_calls", |c| {
                c.limits.max_concurrent_calls = 0
            }),
            ("docker.cpus", |c| {
                c.runtime = RuntimeConfig::Docker(DockerSettings {
                    cpus: f64::NAN,
                    ..DockerSettings::default()
                })
            }),
            ("process.cpus", |c| {
                c.runtime = RuntimeConfig::Process(ProcessSettings {
                    cpus: -1.0,
                    ..ProcessSettings::default()
                })
            }),
            ("process", |c| {
                c.runtime = RuntimeConfig::Process(ProcessSettings {
                    pids: 0,
                    ..ProcessSettings::default()
                })
            }),
            ("gvisor", |c| {
                c.runtime = RuntimeConfig::Gvisor(GvisorSettings {
                    memory_bytes: 0,
                    ..GvisorSettings::default()
                })
            }),
        ];
        for (field, spoil) in cases {
            let mut config = Config::default();
            spoil(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.starts_with(&format!("config: {field}: ")), "{error}");
        }
    }
}
