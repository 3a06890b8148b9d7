//! The `docker` runtime: the worker in a locked-down container of the local engine, talked to over
//! two FIFOs bind-mounted into it (or, as a fallback, the container's attached stdin/stdout).
//!
//! No network, no capabilities, read-only root, a small noexec /tmp, CPU/memory/pids limits,
//! no new privileges, a uid of its own, a private cgroup namespace, a read-only /proc with host
//! files masked and no /sys, removed on exit. Each model folder is bind-mounted read-only at
//! `/models/<name>`, and the protocol FIFOs at `/run/tfsandbox/{in,out}`; nothing else of the
//! host is visible. Pid 1 is `tfsandbox-init`, which kills the worker and ends the container when
//! the attach stream ends: the container's lifetime rests on the attach stream, never on the
//! FIFOs. The worker's log stays on the attach stream's stderr.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, HostConfig, HostConfigCgroupnsModeEnum,
    HostConfigLogConfig, Mount, MountBindOptions, MountType, ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;

use tfsandbox_proto::transport::tuning;
use tfsandbox_proto::worker_env;

use super::cgroup::CgroupLimits;
use super::{model_access, Launch, ModelMounts, Runtime, Worker, WorkerControl};
use crate::closure;
use crate::config::{DockerProtocol, DockerSettings};
use crate::config::{GpuSettings, Gpus};
use crate::error::{Error, Result};
use crate::exit::WorkerExit;
use crate::image;
use crate::procfs;

/// Marks every container tfsandbox makes.
pub const LABEL: &str = "tfsandbox";
/// `<pid>:<start time>` of the host process that owns a container.
pub const OWNER_LABEL: &str = "tfsandbox.owner";
/// The uid (and gid) a container's processes run as.
pub const UID_LABEL: &str = "tfsandbox.uid";

/// Each sandbox runs as a uid and gid of its own from `UID_BASE .. UID_BASE + UID_COUNT`, never
/// two live containers with the same. The engine (20.10) has no user namespace per container,
/// so these are host ids: chosen above every range systems hand out (systemd gives containers
/// up to 1879048191, useradd's subordinate ids end near 600100000) and below 2^31, which some
/// tools mistake for negative.
pub const UID_BASE: u32 = 1_900_000_000;
pub const UID_COUNT: u32 = 65_536;

/// Files in /proc that show the host and that the worker does not read: Docker's own masked
/// list, and the host's boot command line, load, file locks, pressure, devices, interrupts,
/// kernel symbols and modules. Masked files read empty, masked folders are empty. /sys is masked
/// whole: TensorFlow falls back from it (the process runtime has none either).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/buddyinfo",
    "/proc/cmdline",
    "/proc/diskstats",
    "/proc/interrupts",
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/key-users",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/loadavg",
    "/proc/locks",
    "/proc/modules",
    "/proc/partitions",
    "/proc/pressure",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/softirqs",
    "/proc/swaps",
    "/proc/sysvipc",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/uptime",
    "/proc/vmstat",
    "/proc/zoneinfo",
    "/sys",
];
/// All of /proc is read-only (Docker's default makes only some folders so).
pub const READONLY_PATHS: &[&str] = &["/proc"];

/// Where the worker finds the protocol FIFOs inside the container: it reads `in` and writes
/// `out`.
pub const FIFO_IN: &str = "/run/tfsandbox/in";
pub const FIFO_OUT: &str = "/run/tfsandbox/out";
/// The prefix of a sandbox's FIFO folder in the host's temp folder, the host's pid after it
/// (`tfsandbox-<pid>-fifos-<n>`): whose it is, should the host die before removing it.
const FIFO_DIR_PREFIX: &str = "tfsandbox-";
const FIFO_DIR_INFIX: &str = "-fifos-";
/// The modes of the two FIFOs, on the host: the host (their owner) writes `in` and reads `out`;
/// the sandbox's uid, which is neither their owner nor in their group, may only read `in` and
/// only write `out`, so it can open neither read-write.
const FIFO_IN_MODE: u32 = 0o204;
const FIFO_OUT_MODE: u32 = 0o402;
/// How long the host pauses between tries to open its end of `in`, at most: the first pauses are
/// shorter, so a worker that opens its end quickly is not kept waiting.
const FIFO_OPEN_PAUSE: Duration = Duration::from_millis(4);

/// Uids this process has picked whose containers are not gone yet.
static LEASED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// One uid, held until its container is gone.
#[derive(Debug)]
struct UidLease(u32);

impl Drop for UidLease {
    fn drop(&mut self) {
        LEASED.lock().expect("uid leases").remove(&self.0);
    }
}

/// How the container is made beyond the settings: who it runs as, what its pid 1 is, and where
/// its protocol goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The uid and gid of every process in the container.
    pub uid: u32,
    /// The image's entry point is `tfsandbox-init`: the engine's seccomp profile is then the
    /// init's, and the init installs the worker's own allowlist in the worker.
    pub init: bool,
    /// The host folder holding the protocol FIFOs (`in`, `out`), bind-mounted read-only at
    /// [`FIFO_IN`] and [`FIFO_OUT`]; `None`: the protocol is on the attach stream.
    pub fifos: Option<PathBuf>,
}

pub struct DockerRuntime {
    docker: Docker,
    settings: DockerSettings,
    mounts: ModelMounts,
    gpu: GpuSettings,
}

impl DockerRuntime {
    /// Connects to the local engine and removes containers whose owning host process is gone.
    pub async fn connect(settings: DockerSettings, mounts: ModelMounts) -> Result<DockerRuntime> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| engine("connecting to the Docker engine", e))?;
        docker
            .ping()
            .await
            .map_err(|e| engine("reaching the Docker engine", e))?;
        if let Some(wanted) = &settings.engine_runtime {
            let info = docker
                .info()
                .await
                .map_err(|e| engine("asking the Docker engine for its runtimes", e))?;
            let known: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
            if !known.contains(wanted) {
                return Err(Error::NoEngineRuntime {
                    wanted: wanted.clone(),
                    known: known.join(", "),
                });
            }
        }
        let runtime = DockerRuntime {
            docker,
            settings,
            mounts,
            gpu: GpuSettings::default(),
        };
        runtime.reap_orphans().await?;
        Ok(runtime)
    }

    /// Lets the worker use GPUs: the CUDA image and a device request for them.
    pub fn with_gpus(mut self, gpu: GpuSettings) -> DockerRuntime {
        self.gpu = gpu;
        self
    }

    async fn reap_orphans(&self) -> Result<()> {
        remove_orphaned_fifo_dirs(&std::env::temp_dir());
        for container in self.containers_labelled(LABEL).await? {
            let owner = container
                .labels
                .as_ref()
                .and_then(|l| l.get(OWNER_LABEL))
                .cloned()
                .unwrap_or_default();
            if owner_alive(&owner) {
                continue;
            }
            if let Some(id) = container.id {
                tracing::info!(container = %id, %owner, "removing a sandbox container whose host is gone");
                let options = RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                };
                // Already going (auto-remove) is fine.
                let _ = self.docker.remove_container(&id, Some(options)).await;
                // Its host had no chance to take back the model ACL entries of its uid.
                let uid = container
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(UID_LABEL)?.parse().ok());
                if let Some(uid) = uid {
                    let sources: Vec<std::path::PathBuf> = container
                        .mounts
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|m| m.source.map(Into::into))
                        .collect();
                    model_access::revoke_all(uid, sources.iter().map(|p| p.as_path()));
                }
            }
        }
        Ok(())
    }

    /// The image, and whether its entry point is the init (a given image is run as it is).
    async fn image(&self, worker: &Path) -> Result<(String, bool)> {
        if let Some(image) = &self.settings.image {
            return Ok((image.clone(), false));
        }
        let closure = self
            .gpu
            .closure(worker)?
            .with_init(&closure::init_beside(worker), &self.gpu.library_dirs)?;
        let reference =
            image::ensure_loaded(&self.docker, &closure, self.settings.progress.as_ref()).await?;
        Ok((reference, true))
    }

    /// Where the protocol goes: on FIFOs unless the settings ask for attach, or the engine runs
    /// the container with an OCI runtime other than runc (runsc builds of this era break
    /// bind-mounted host FIFOs: gVisor issues 8037, 3501).
    fn protocol(&self) -> DockerProtocol {
        match self.settings.engine_runtime.as_deref() {
            None | Some("runc") => self.settings.protocol,
            Some(_) => DockerProtocol::Attach,
        }
    }

    /// Picks a uid that no live tfsandbox container (of any host process) and no container this
    /// process is making runs as.
    async fn lease_uid(&self) -> Result<UidLease> {
        let live = self.live_uids().await?;
        let mut leased = LEASED.lock().expect("uid leases");
        let start = (std::collections::hash_map::RandomState::new().hash_one(std::process::id())
            % u64::from(UID_COUNT)) as u32;
        (0..UID_COUNT)
            .map(|i| UID_BASE + (start + i) % UID_COUNT)
            .find(|uid| !live.contains(uid) && !leased.contains(uid))
            .map(|uid| {
                leased.insert(uid);
                UidLease(uid)
            })
            .ok_or_else(|| {
                Error::NoFreeUid(format!("all {UID_COUNT} uids from {UID_BASE} are in use"))
            })
    }

    /// The uids of tfsandbox containers the engine holds, in any state.
    async fn live_uids(&self) -> Result<BTreeSet<u32>> {
        Ok(self
            .label_values(UID_LABEL)
            .await?
            .into_iter()
            .filter_map(|(_, _, uid)| uid.parse().ok())
            .collect())
    }

    /// Every container carrying `label` (`name` or `name=value`), in any state.
    async fn containers_labelled(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("listing containers", e))
    }

    /// (created, id, label value) of every container carrying `label` (`name` or `name=value`).
    async fn label_values(&self, label: &str) -> Result<Vec<(i64, String, String)>> {
        let name = label.split('=').next().unwrap_or(label);
        Ok(self
            .containers_labelled(label)
            .await?
            .into_iter()
            .filter_map(|c| {
                let value = c.labels.as_ref()?.get(name)?.clone();
                Some((c.created.unwrap_or(0), c.id?, value))
            })
            .collect())
    }

    /// Whether another host process made a container with the same uid before this one did
    /// (both listed before either was made); the later one gives way.
    async fn uid_taken_first(&self, id: &str, uid: u32) -> Result<bool> {
        let same = self.label_values(&format!("{UID_LABEL}={uid}")).await?;
        let ours = same.iter().find(|(_, theirs, _)| theirs == id);
        Ok(match ours {
            Some(ours) => same
                .iter()
                .any(|other| (other.0, &other.1) < (ours.0, &ours.1)),
            None => false,
        })
    }

    /// The container as the engine is asked to make it.
    pub fn container_body(
        &self,
        image: String,
        launch: &Launch,
        identity: Identity,
    ) -> ContainerCreateBody {
        Self::container_body_for(
            &self.settings,
            &self.mounts,
            &self.gpu.gpus,
            image,
            launch,
            identity,
        )
    }

    /// The container as the engine is asked to make it; every setting here is a security decision.
    /// A pure function of its arguments. With `gpus`, a device request for them (the NVIDIA
    /// container toolkit then mounts their device nodes and the driver's libraries) and the
    /// seccomp profile with the driver's ioctl requests.
    pub fn container_body_for(
        settings: &DockerSettings,
        mounts: &ModelMounts,
        gpus: &Gpus,
        image: String,
        launch: &Launch,
        identity: Identity,
    ) -> ContainerCreateBody {
        let s = settings;
        let profile = if identity.init {
            tfsandbox_jailer::seccomp::docker_init_profile_for(policy(gpus))
        } else {
            tfsandbox_jailer::seccomp::docker_profile_for(policy(gpus))
        };
        let strings = |list: &[&str]| list.iter().map(|p| p.to_string()).collect();
        let ulimit = |name: &str, value: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(value),
            hard: Some(value),
        };
        let bind = |host: &Path, target: String| Mount {
            target: Some(target),
            source: Some(host.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            // A FIFO on a read-only mount is still read and written; only its inode is fixed.
            read_only: Some(true),
            bind_options: Some(MountBindOptions {
                non_recursive: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fifos = identity.fifos.as_deref();
        let mounts = mounts
            .iter()
            .map(|(host, name)| bind(host, format!("/models/{name}")))
            .chain(fifos.into_iter().flat_map(|dir| {
                [
                    bind(&dir.join("in"), FIFO_IN.into()),
                    bind(&dir.join("out"), FIFO_OUT.into()),
                ]
            }))
            .collect();
        let protocol_env = fifos.into_iter().flat_map(|_| {
            [
                (worker_env::PROTOCOL_IN, FIFO_IN.to_string()),
                (worker_env::PROTOCOL_OUT, FIFO_OUT.to_string()),
            ]
        });
        ContainerCreateBody {
            image: Some(image),
            // Numeric: the image's /etc/passwd does not name it, and nothing in it needs a name.
            user: Some(format!("{0}:{0}", identity.uid)),
            env: Some(
                launch
                    .worker_env()
                    .into_iter()
                    .chain([(worker_env::CGROUP, bounds(s))])
                    .chain(protocol_env)
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect(),
            ),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // When the host's attach connection goes, the init's stdin closes and it kills the
            // worker. The host holds it with the FIFOs too: it is what ends the container.
            stdin_once: Some(true),
            // A tty would mangle the binary protocol.
            tty: Some(false),
            network_disabled: Some(true),
            labels: Some(HashMap::from([
                (LABEL.to_string(), "1".to_string()),
                (OWNER_LABEL.to_string(), owner_of_this_process()),
                ("tfsandbox.sandbox".to_string(), launch.sandbox_id.clone()),
                (UID_LABEL.to_string(), identity.uid.to_string()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    format!("rw,noexec,nosuid,nodev,size={},mode=1777", s.tmp_bytes),
                )])),
                nano_cpus: Some((s.cpus * 1e9) as i64),
                memory: Some(s.memory_bytes),
                memory_swap: Some(s.memory_bytes),
                pids_limit: Some(s.pids_limit),
                // The same allowlist the process runtime's jailer installs; stricter than the
                // engine's default (no ptrace, no socket(), no fork). With the init, its few
                // calls more, which the worker's own filter then takes away again.
                security_opt: Some(vec![
                    "no-new-privileges".into(),
                    format!("seccomp={profile}"),
                ]),
                cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
                masked_paths: Some(strings(MASKED_PATHS)),
                readonly_paths: Some(strings(READONLY_PATHS)),
                ulimits: Some(vec![
                    ulimit("nofile", s.nofile),
                    ulimit("nproc", s.nproc),
                    ulimit("core", 0),
                ]),
                ipc_mode: Some("none".into()),
                // The engine's default log driver writes every byte of stdout (the protocol, on
                // the attach fallback) to a JSON file: on disk, unbounded, and most of the attach
                // path's cost. The host forwards stderr itself.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                auto_remove: Some(true),
                privileged: Some(false),
                init: Some(false),
                mounts: Some(mounts),
                device_requests: device_request(gpus).map(|request| vec![request]),
                runtime: s.engine_runtime.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Runtime for DockerRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let (image, init) = self.image(&launch.worker_path).await?;
            let name = format!("tfsandbox-{}", launch.sandbox_id);
            let fifos = match self.protocol() {
                DockerProtocol::Fifos => match ProtocolFifos::create() {
                    Ok(fifos) => Some(fifos),
                    Err(error) => {
                        tracing::warn!(sandbox = %launch.sandbox_id, %error, "the protocol goes over the attach stream instead");
                        None
                    }
                },
                DockerProtocol::Attach => None,
            };
            // Before the worker starts: its open of its end then returns at once.
            let output = fifos.as_ref().map(ProtocolFifos::open_output).transpose()?;
            let input = fifos.as_ref().map(ProtocolFifos::input);
            // Two host processes may pick the same uid at once; the one that made its container
            // later gives way and picks again.
            let mut attempts = 0;
            let (id, held) = loop {
                attempts += 1;
                let lease = self.lease_uid().await?;
                let grants = model_access::grant(lease.0, self.mounts.iter().map(|(host, _)| host))?;
                if !grants.is_empty() {
                    tracing::debug!(sandbox = %launch.sandbox_id, uid = lease.0, files = grants.len(), "granted the sandbox's uid read on model files by ACL");
                }
                let identity = Identity { uid: lease.0, init, fifos: fifos.as_ref().map(|f| f.dir.clone()) };
                let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
                let created = self
                    .docker
                    .create_container(Some(options), self.container_body(image.clone(), launch, identity))
                    .await
                    .map_err(|e| engine(&format!("creating container {name} from {image}"), e))?;
                let taken = self.uid_taken_first(&created.id, lease.0).await;
                if let Ok(false) = taken {
                    // Given back in this order once the container is gone.
                    break (created.id, (grants, lease));
                }
                remove(&self.docker, &created.id).await;
                taken?;
                if attempts == 3 {
                    return Err(Error::NoFreeUid(format!(
                        "another host process took the uid first, {attempts} times"
                    )));
                }
            };
            // Waiting starts before the container does (as `docker run --rm` does): once it is
            // auto-removed there is nothing left to ask. The uid is free again only then, and the
            // FIFOs' folder goes then too.
            let mut control = DockerControl {
                docker: self.docker.clone(),
                id: id.clone(),
                exit: Some(spawn_wait(&self.docker, &id, (held, fifos))),
                attached_stdin: None,
            };
            // From here on the container exists: any failure removes it.
            let attached = match attach_and_start(&self.docker, &id, output.is_none()).await {
                Ok(attached) => attached,
                Err(error) => {
                    remove(&self.docker, &id).await;
                    return Err(error);
                }
            };
            let (Some(output), Some(input)) = (output, input) else {
                tracing::debug!(sandbox = %launch.sandbox_id, container = %id, "worker container started, the protocol on its attach stream");
                return Ok(Worker {
                    stdin: attached.input,
                    stdout: attached.protocol.expect("the protocol is on the attach stream"),
                    stderr: attached.log,
                    control: Box::new(control),
                });
            };
            // Held, never written: the init ends the container when it closes.
            control.attached_stdin = Some(Mutex::new(attached.input));
            // The host never waits on the worker's good will: not past the start timeout, not
            // past the container's end.
            let opening = tokio::select! {
                opened = open_input(&input) => Opening::Opened(opened),
                status = control.wait() => Opening::Gone(status),
                () = tokio::time::sleep(launch.start_timeout) => Opening::TimedOut,
            };
            let status = match opening {
                Opening::Opened(Ok(input)) => {
                    // Larger pipes carry a large tensor in fewer wake-ups; best effort, as the
                    // process runtime's.
                    let _ = rustix::pipe::fcntl_setpipe_size(&input, tuning::PIPE_BYTES);
                    tracing::debug!(sandbox = %launch.sandbox_id, container = %id, "worker container started, the protocol on its FIFOs");
                    return Ok(Worker {
                        stdin: Box::new(input),
                        stdout: Box::new(output),
                        stderr: attached.log,
                        control: Box::new(control),
                    });
                }
                Opening::Opened(Err(error)) => {
                    remove(&self.docker, &id).await;
                    return Err(error);
                }
                Opening::Gone(status) => status,
                Opening::TimedOut => {
                    control.kill().await;
                    control.wait().await.killed_because(format!(
                        "it did not open its protocol FIFO {FIFO_IN} within {:?}",
                        launch.start_timeout
                    ))
                }
            };
            // The worker is gone before the protocol began: its start fails as that of any
            // worker that exits at once does, with its status and its last log lines.
            Ok(control.closed_worker(status, attached.log))
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        self.mounts.inside(host)
    }
}

/// How waiting for the worker to open its end of the protocol ended.
enum Opening {
    Opened(Result<pipe::Sender>),
    /// The container ended first.
    Gone(WorkerExit),
    TimedOut,
}

/// Removes a container at once; fails only if it is already going (auto-remove).
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(id, Some(options)).await;
}

/// The host's writing end of the worker's input, once the worker has opened its reading end (and
/// so, in the worker's order, holds its end of the output already: the host's reader sees EOF
/// when the worker is gone). Non-blocking, so an open never waits on the worker (ENXIO while it
/// has no reader) and is tried again after a pause; the caller bounds how long. Never read-write:
/// the host would then be a reader of the worker's input itself.
async fn open_input(path: &Path) -> Result<pipe::Sender> {
    let mut pause = Duration::from_millis(1);
    loop {
        match pipe::OpenOptions::new().open_sender(path) {
            Ok(sender) => return Ok(sender),
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => {}
            Err(source) => return Err(fifo_error("opening the host's end", path, source)),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(FIFO_OPEN_PAUSE);
    }
}

fn fifo_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::ProtocolFifo {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The two FIFOs of one container, in a private folder of the host's temp folder: `in`, which
/// the host writes and the worker reads, and `out`, the other way. Removed when dropped, which the
/// container's wait does once the container is gone.
struct ProtocolFifos {
    dir: PathBuf,
}

impl ProtocolFifos {
    /// `tfsandbox-<pid>-fifos-<n>`, 0700: mkdir is atomic and follows no symlink, so a name
    /// someone else took fails with EEXIST and the next is tried; the folder made is ours, and
    /// nobody else can reach into it (the engine binds the FIFOs themselves).
    fn create() -> Result<ProtocolFifos> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = std::env::temp_dir();
        let dir = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = tmp.join(format!(
                "{FIFO_DIR_PREFIX}{}{FIFO_DIR_INFIX}{n}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(fifo_error("making its folder", &dir, source)),
            }
        };
        // From here on, dropping it removes what was made.
        let fifos = ProtocolFifos { dir };
        for (path, mode) in [
            (fifos.input(), FIFO_IN_MODE),
            (fifos.output(), FIFO_OUT_MODE),
        ] {
            use rustix::fs::{chmodat, mknodat, AtFlags, FileType, Mode, CWD};
            let mode = Mode::from_raw_mode(mode);
            mknodat(CWD, &path, FileType::Fifo, mode, 0)
                .map_err(|e| fifo_error("making", &path, e.into()))?;
            // Exactly that mode, whatever the umask took away.
            chmodat(CWD, &path, mode, AtFlags::empty())
                .map_err(|e| fifo_error("setting the mode of", &path, e.into()))?;
        }
        Ok(fifos)
    }

    fn input(&self) -> PathBuf {
        self.dir.join("in")
    }

    fn output(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// The host's reading end of the worker's output: read-only and non-blocking, so it opens
    /// without a writer, and reads end (EOF) once the worker, having opened its end, is gone.
    fn open_output(&self) -> Result<pipe::Receiver> {
        let path = self.output();
        let output = pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(|e| fifo_error("opening the host's end", &path, e))?;
        let _ = rustix::pipe::fcntl_setpipe_size(&output, tuning::PIPE_BYTES);
        Ok(output)
    }
}

impl Drop for ProtocolFifos {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.input());
        let _ = std::fs::remove_file(self.output());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes the FIFO folders that hosts killed before they could clean up left in `tmp`: only
/// `tfsandbox-<pid>-fifos-<n>` of a pid that is gone (in this pid namespace), and in it only the
/// two FIFOs.
fn remove_orphaned_fifo_dirs(tmp: &Path) {
    for dir in super::orphaned_folders(tmp, FIFO_DIR_PREFIX, FIFO_DIR_INFIX) {
        tracing::debug!(folder = %dir.display(), "removing the FIFO folder of a host that is gone");
        drop(ProtocolFifos { dir });
    }
}

/// The attach stream, split.
struct Attached {
    input: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    /// The protocol, where it is on the attach stream.
    protocol: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    /// The worker's log: its stderr, and with the FIFOs its stdout too, where nothing should
    /// come (the worker makes its fd 1 a copy of its stderr).
    log: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
}

/// Attaches before starting, so not one byte of output is missed, and splits the multiplexed
/// output back into the protocol (stdout, where `protocol_on_attach`) and the log.
async fn attach_and_start(docker: &Docker, id: &str, protocol_on_attach: bool) -> Result<Attached> {
    let options = AttachContainerOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        stream: true,
        logs: false,
        ..Default::default()
    };
    let attached = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|e| engine("attaching to the container", e))?;
    docker
        .start_container(id, None)
        .await
        .map_err(|e| engine("starting the container", e))?;

    let (out_tx, out_rx) = mpsc::channel::<io::Result<Bytes>>(64);
    let (err_tx, err_rx) = mpsc::channel::<io::Result<Bytes>>(64);
    let mut output = attached.output;
    tokio::spawn(async move {
        while let Some(item) = output.next().await {
            let sent = match item {
                Ok(LogOutput::StdOut { message }) if protocol_on_attach => {
                    out_tx.send(Ok(message)).await.is_ok()
                }
                Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }) => {
                    // Logs are best effort; the protocol goes on without them.
                    let _ = err_tx.send(Ok(message)).await;
                    true
                }
                Ok(_) => true,
                Err(error) => {
                    let _ = out_tx.send(Err(io::Error::other(error))).await;
                    false
                }
            };
            if !sent {
                break;
            }
        }
    });
    Ok(Attached {
        input: Box::new(attached.input),
        protocol: protocol_on_attach.then(|| {
            Box::new(StreamReader::new(ReceiverStream::new(out_rx)))
                as Box<dyn tokio::io::AsyncRead + Send + Unpin>
        }),
        log: Box::new(StreamReader::new(ReceiverStream::new(err_rx))),
    })
}

/// Waits for the container to exit and be removed; resolves to how it ended.
/// `held` is dropped once the container is gone.
fn spawn_wait(
    docker: &Docker,
    id: &str,
    held: impl Send + 'static,
) -> oneshot::Receiver<WorkerExit> {
    let (tx, rx) = oneshot::channel();
    let docker = docker.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        // The kernel's OOM kill looks like any SIGKILL in the exit code; the engine's event tells.
        let filters = HashMap::from([
            ("container".to_string(), vec![id.clone()]),
            ("event".to_string(), vec!["oom".to_string()]),
        ]);
        let mut ooms = docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        let options = WaitContainerOptions {
            condition: "removed".into(),
        };
        let mut wait = docker.wait_container(&id, Some(options));
        let mut oom = false;
        let waited = loop {
            tokio::select! {
                waited = wait.next() => break waited,
                Some(Ok(_)) = ooms.next(), if !oom => oom = true,
            }
        };
        let code = match waited {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(error.to_string()),
            None => Err("the engine ended the wait without a status".into()),
        };
        let status = match code {
            Ok(code) => WorkerExit::from_shell_code(code),
            Err(error) => WorkerExit::unknown(error),
        };
        let status = WorkerExit { oom, ..status };
        drop(held);
        let _ = tx.send(status);
    });
    rx
}

struct DockerControl {
    docker: Docker,
    id: String,
    exit: Option<oneshot::Receiver<WorkerExit>>,
    /// The attached stdin where the protocol is on the FIFOs: held, never written, until the
    /// worker is gone, since the init ends the container when it closes. (In a mutex only so the
    /// control is `Sync`; it is never locked.)
    attached_stdin: Option<Mutex<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>>,
}

impl DockerControl {
    /// The worker of a container that ended before the protocol began: closed stdio, and `status`
    /// as its exit.
    fn closed_worker(
        mut self,
        status: WorkerExit,
        stderr: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Worker {
        let (tx, exit) = oneshot::channel();
        let _ = tx.send(status);
        self.exit = Some(exit);
        Worker {
            stdin: Box::new(tokio::io::sink()),
            stdout: Box::new(tokio::io::empty()),
            stderr,
            control: Box::new(self),
        }
    }
}

impl WorkerControl for DockerControl {
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit> {
        async move {
            match self.exit.as_mut() {
                Some(exit) => exit
                    .await
                    .unwrap_or_else(|_| WorkerExit::unknown("the wait was lost")),
                None => WorkerExit::default(),
            }
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            let options = KillContainerOptions {
                signal: "SIGKILL".into(),
            };
            // Fails only if it is already gone.
            let _ = self.docker.kill_container(&self.id, Some(options)).await;
        }
        .boxed()
    }

    fn host_pid(&self) -> Option<u32> {
        // The container's processes belong to the engine, not to this host process.
        None
    }
}

/// What bounds a container as a whole, for its posture report.
fn bounds(s: &DockerSettings) -> String {
    let limits = CgroupLimits {
        memory_bytes: s.memory_bytes.unsigned_abs(),
        cpus: s.cpus,
        pids: s.pids_limit.unsigned_abs(),
    };
    format!("the engine's cgroup: {limits}")
}

fn policy(gpus: &Gpus) -> tfsandbox_jailer::seccomp::Policy {
    tfsandbox_jailer::seccomp::Policy::for_gpus(!gpus.is_none())
}

fn engine(action: &str, error: bollard::errors::Error) -> Error {
    Error::Engine {
        action: action.to_string(),
        source: error,
    }
}

/// `<pid>:<start time>`: a pid alone may be reused by another process after the host exits.
/// Containers of this host process that the engine still holds, in any state.
pub async fn containers_of_this_process() -> Result<usize> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| engine("connecting to the Docker engine", e))?;
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{OWNER_LABEL}={}", owner_of_this_process())],
        )])),
        ..Default::default()
    };
    let containers = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine("listing containers", e))?;
    Ok(containers.len())
}

fn owner_of_this_process() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// When the process started, in clock ticks after boot.
fn start_time(pid: u32) -> Option<u64> {
    procfs::stat_field(pid, 22)
}

/// The engine's device request for `gpus` (what `docker run --gpus` sends): the NVIDIA driver,
/// every GPU (`count: -1`) or the named ones, with the compute and utility driver capabilities
/// (CUDA, and NVML for the toolkit's own checks).
pub fn device_request(gpus: &Gpus) -> Option<bollard::models::DeviceRequest> {
    if gpus.is_none() {
        return None;
    }
    let (count, device_ids) = match gpus {
        Gpus::Devices(devices) => (None, Some(devices.clone())),
        _ => (Some(-1), None),
    };
    Some(bollard::models::DeviceRequest {
        driver: Some("nvidia".into()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".into(), "compute".into(), "utility".into()]]),
        options: None,
    })
}
