//! The `gvisor` runtime: the worker under gVisor's user-space kernel (`runsc`), no daemon needed.
//!
//! The host writes an OCI bundle whose root holds only the worker's closure (the image's files
//! and layout, each bound read-only) and the models, then runs `runsc run` as a child with piped
//! stdio, so the transport is the process runtime's. The worker's syscalls reach gVisor's Sentry,
//! not the host kernel. Memory and CPU are bounded by runsc through the sandbox's cgroup.
//!
//! No `tfsandbox-init` here: runsc's own sandbox process is the container's parent, and when it
//! goes (the host killed it, or `runsc kill`) the whole gVisor kernel goes with every process in
//! it, so no orphan can outlive the worker as it could under a plain container's pid 1.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, LinuxSeccompAction, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use tokio::process::{Child, Command};

use tfsandbox_jailer::plan::NOBODY;
use tfsandbox_jailer::seccomp::Policy;

use tfsandbox_proto::worker_env;

use super::cgroup::CgroupLimits;
use super::{Launch, ModelMounts, Runtime, Worker, WorkerControl};
use crate::closure::{Closure, Variant};
use crate::config::GvisorSettings;
use crate::error::{Error, Result};
use crate::exit::WorkerExit;
use tfsandbox_jailer::plan::{GROUP, PASSWD};

/// How long `runsc kill` / `runsc delete` may take before they are given up on.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each host process keeps its runsc state, in a folder named by its pid.
const STATE_PREFIX: &str = "tfsandbox-runsc-";

/// Each host process's bundles lie in a folder named by its pid, beside the state.
const BUNDLE_PREFIX: &str = "tfsandbox-bundles-";

pub struct GvisorRuntime {
    settings: GvisorSettings,
    mounts: ModelMounts,
    folders: Arc<HostFolders>,
}

impl GvisorRuntime {
    pub fn new(settings: GvisorSettings, mounts: ModelMounts) -> Result<GvisorRuntime> {
        let base = settings.state_dir.clone();
        std::fs::create_dir_all(&base).map_err(|source| Error::Spawn {
            path: base.clone(),
            source,
        })?;
        reap_orphans(&settings, &base);
        Ok(GvisorRuntime {
            folders: HostFolders::shared(&base)?,
            settings,
            mounts,
        })
    }

    /// The OCI runtime spec of container `id`, whose root is `rootfs`.
    pub fn spec(
        &self,
        closure: &Closure,
        rootfs: &Path,
        id: &str,
        launch: &Launch,
    ) -> Result<Spec> {
        let s = &self.settings;
        let oci = |e: oci_spec::OciSpecError| Error::Confinement {
            sandbox: launch.sandbox_id.clone(),
            message: format!("writing the OCI spec: {e}"),
        };
        let bind = |inside: &str, host: &Path| -> Result<Mount> {
            MountBuilder::default()
                .destination(inside)
                .typ("bind")
                .source(host)
                .options(
                    ["rbind", "ro", "nosuid", "nodev"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(oci)
        };
        // Beside the root, in the bundle: what the masked /proc files show.
        let empty = rootfs.with_file_name("empty");
        std::fs::File::create(&empty).map_err(|e| Error::Confinement {
            sandbox: launch.sandbox_id.clone(),
            message: format!("making {}: {e}", empty.display()),
        })?;
        let empty = empty.as_path();
        // The image's /etc files, beside the root too.
        let mut etc = Vec::new();
        for (name, text) in [("passwd", PASSWD), ("group", GROUP)] {
            let file = rootfs.with_file_name(name);
            std::fs::write(&file, text).map_err(|e| Error::Confinement {
                sandbox: launch.sandbox_id.clone(),
                message: format!("making {}: {e}", file.display()),
            })?;
            etc.push((format!("/etc/{name}"), file));
        }
        let mut mounts = vec![
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .options(
                    ["ro", "nosuid", "nodev", "noexec"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(oci)?,
            MountBuilder::default()
                .destination("/tmp")
                .typ("tmpfs")
                .source("tmpfs")
                .options(vec![
                    "rw".into(),
                    "noexec".into(),
                    "nosuid".into(),
                    "nodev".into(),
                    format!("size={}", s.tmp_bytes),
                    "mode=1777".into(),
                ])
                .build()
                .map_err(oci)?,
        ];
        // gVisor's own /dev would take writes (/dev/urandom); the worker needs no device.
        mounts.push(
            MountBuilder::default()
                .destination("/dev")
                .typ("tmpfs")
                .source("tmpfs")
                .options(
                    ["ro", "nosuid", "nodev", "noexec", "size=4k"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(oci)?,
        );
        // gVisor's kernel shows its own values here, not the host's; empty as under docker.
        // (This runsc ignores `maskedPaths`.)
        for file in ["/proc/cmdline", "/proc/loadavg"] {
            mounts.push(bind(file, empty)?);
        }
        for (inside, file) in &etc {
            mounts.push(bind(inside, file)?);
        }
        for entry in &closure.entries {
            mounts.push(bind(&entry.image_path, &entry.host_path)?);
        }
        for (host, name) in self.mounts.iter() {
            mounts.push(bind(&format!("/models/{name}"), host)?);
        }
        // Mount points must exist in a read-only root: made here, empty, on the host (those in
        // /proc and /dev are the kernel's).
        for mount in &mounts {
            let destination = mount.destination();
            if destination.starts_with("/proc/") || destination.starts_with("/dev/") {
                continue;
            }
            let inside = rootfs.join(
                mount
                    .destination()
                    .strip_prefix("/")
                    .unwrap_or(mount.destination()),
            );
            let made = match mount.source().as_deref() {
                Some(source) if source.is_file() => inside
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::File::create(&inside).map(|_| ())),
                _ => std::fs::create_dir_all(&inside),
            };
            made.map_err(|e| Error::Confinement {
                sandbox: launch.sandbox_id.clone(),
                message: format!("making the mount point {}: {e}", inside.display()),
            })?;
        }
        let rlimit = |typ, value: u64| {
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(value)
                .hard(value)
                .build()
                .map_err(oci)
        };
        let none = HashSet::new();
        let process = ProcessBuilder::default()
            .terminal(false)
            .user(
                UserBuilder::default()
                    .uid(NOBODY)
                    .gid(NOBODY)
                    .build()
                    .map_err(oci)?,
            )
            .args(closure.entrypoint())
            .env(
                launch
                    .worker_env()
                    .into_iter()
                    .chain([(worker_env::CGROUP, bounds(s))])
                    .map(|(name, value)| format!("{name}={value}"))
                    .chain(["PATH=/usr/bin".to_string()])
                    .collect::<Vec<_>>(),
            )
            .cwd("/")
            .capabilities(
                LinuxCapabilitiesBuilder::default()
                    .bounding(none.clone())
                    .effective(none.clone())
                    .inheritable(none.clone())
                    .permitted(none.clone())
                    .ambient(none)
                    .build()
                    .map_err(oci)?,
            )
            .rlimits(vec![
                rlimit(PosixRlimitType::RlimitNofile, s.nofile)?,
                rlimit(PosixRlimitType::RlimitFsize, s.file_size_bytes)?,
                rlimit(PosixRlimitType::RlimitCore, 0)?,
                rlimit(PosixRlimitType::RlimitAs, s.address_space_bytes)?,
            ])
            .no_new_privileges(true)
            .build()
            .map_err(oci)?;
        let namespaces = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
        ]
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(oci)
        })
        .collect::<Result<Vec<_>>>()?;
        let period: u64 = 100_000;
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(s.memory_bytes)
                    .swap(s.memory_bytes)
                    .build()
                    .map_err(oci)?,
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .period(period)
                    .quota((s.cpus * period as f64) as i64)
                    .build()
                    .map_err(oci)?,
            )
            .pids(
                LinuxPidsBuilder::default()
                    .limit(s.pids)
                    .build()
                    .map_err(oci)?,
            )
            .build()
            .map_err(oci)?;
        let seccomp = seccomp_profile().map_err(|e| Error::Confinement {
            sandbox: launch.sandbox_id.clone(),
            message: format!("the seccomp policy as an OCI profile: {e}"),
        })?;
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .seccomp(seccomp)
            .resources(resources)
            .cgroups_path(PathBuf::from(format!("/tfsandbox/{id}")))
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new())
            .build()
            .map_err(oci)?;
        SpecBuilder::default()
            .version("1.0.2")
            .root(
                RootBuilder::default()
                    .path(rootfs)
                    .readonly(true)
                    .build()
                    .map_err(oci)?,
            )
            .hostname("tfsandbox")
            .mounts(mounts)
            .process(process)
            .linux(linux)
            .build()
            .map_err(oci)
    }

    /// The closure the root holds: the worker's, without the init (see the module's note).
    fn closure(&self, worker: &Path) -> Result<Closure> {
        Ok(Closure::resolve_cached(worker, Variant::Cpu, &[])?)
    }
}

/// The jailer's one policy, as the docker runtime passes it, which gVisor's kernel applies to the
/// worker's calls (runsc ignores it without `--oci-seccomp`). One change: this runsc (20221219)
/// answers every SCMP_ACT_ERRNO with EPERM whatever `errnoRet` says, and glibc falls back from
/// `clone3` to `clone` only on ENOSYS; so `clone3` is let through to gVisor's kernel, which does
/// not implement it and answers ENOSYS itself (the escape suite checks that answer).
/// What bounds a sandbox as a whole, for its posture report.
fn bounds(s: &GvisorSettings) -> String {
    let limits = CgroupLimits {
        memory_bytes: s.memory_bytes.unsigned_abs(),
        cpus: s.cpus,
        pids: s.pids.unsigned_abs(),
    };
    format!("runsc's cgroup: {limits}")
}

fn seccomp_profile() -> serde_json::Result<LinuxSeccomp> {
    let mut profile: LinuxSeccomp =
        serde_json::from_str(&tfsandbox_jailer::seccomp::docker_profile_for(Policy::Cpu))?;
    let rules = profile.syscalls().clone().map(|rules| {
        rules
            .into_iter()
            .map(|mut rule| {
                if rule
                    .names()
                    .iter()
                    .all(|n| tfsandbox_jailer::ENOSYS_SYSCALLS.contains(&n.as_str()))
                {
                    rule.set_action(LinuxSeccompAction::ScmpActAllow);
                    rule.set_errno_ret(None);
                }
                rule
            })
            .collect()
    });
    profile.set_syscalls(rules);
    Ok(profile)
}

/// `runsc` with the settings' global flags and this state folder.
fn runsc(settings: &GvisorSettings, state: &Path) -> Command {
    let mut command = Command::new(&settings.runsc_path);
    command
        .arg(format!("--root={}", state.display()))
        .arg("--network=none")
        .arg(format!("--platform={}", settings.platform))
        .arg("--oci-seccomp")
        .env_clear()
        .stdin(Stdio::null());
    command
}

/// What kills and then deletes container `id`, whatever its state (its runsc state files and
/// cgroups go with the delete).
fn reap_verbs(id: &str) -> [[&str; 4]; 2] {
    [["kill", "--all", id, "KILL"], ["delete", "--force", id, ""]]
}

/// Kills and deletes container `id`; best effort, bounded in time.
async fn reap(settings: &GvisorSettings, state: &Path, id: &str) {
    for verb in reap_verbs(id) {
        let mut command = runsc(settings, state);
        command
            .args(verb.iter().filter(|a| !a.is_empty()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Ok(Ok(status)) = tokio::time::timeout(REAP_TIMEOUT, command.status()).await {
            if !status.success() {
                tracing::debug!(container = id, %status, ?verb, "runsc failed");
            }
        }
    }
    remove_stale_lock(state, id);
}

/// Removes the lock file runsc leaves for container `id` when a command (runsc run's own clean-up,
/// a second kill or delete) locks it after its state was deleted: seen in a soak, three of 250.
fn remove_stale_lock(state: &Path, id: &str) {
    let name = format!("{id}_sandbox:{id}");
    if !state.join(format!("{name}.state")).exists() {
        let _ = std::fs::remove_file(state.join(format!("{name}.lock")));
    }
}

/// [`reap`] without a runtime to wait in: for a sandbox dropped unreaped (its task cancelled
/// when the host's async runtime shut down) and for those a dead host left.
fn reap_blocking(settings: &GvisorSettings, state: &Path, id: &str) {
    for verb in reap_verbs(id) {
        let child = std::process::Command::new(&settings.runsc_path)
            .arg(format!("--root={}", state.display()))
            .args(verb.iter().filter(|a| !a.is_empty()))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else { continue };
        let deadline = Instant::now() + REAP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    remove_stale_lock(state, id);
}

/// Deletes the sandboxes that hosts which died before cleaning up left in `base`, then their
/// state folders. Runs synchronously once, when the runtime is made.
fn reap_orphans(settings: &GvisorSettings, base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(STATE_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let state = entry.path();
        let listed = std::process::Command::new(&settings.runsc_path)
            .arg(format!("--root={}", state.display()))
            .args(["list", "--quiet"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        if let Ok(listed) = listed {
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                reap_blocking(settings, &state, id);
                tracing::info!(
                    container = id,
                    "removed a gvisor sandbox an earlier host left behind"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_dir_all(base.join(format!("{BUNDLE_PREFIX}{pid}")));
    }
}

/// What this host process holds under `settings`' state folder: its runsc sandboxes (a state
/// file each) and every entry of its state and bundle folders, the folders themselves included.
/// For the soak's census.
pub fn leftovers(settings: &GvisorSettings) -> (usize, usize) {
    let pid = std::process::id();
    let mut sandboxes = 0;
    let mut entries = 0;
    for prefix in [STATE_PREFIX, BUNDLE_PREFIX] {
        let folder = settings.state_dir.join(format!("{prefix}{pid}"));
        let Ok(list) = std::fs::read_dir(&folder) else {
            continue;
        };
        entries += 1;
        for entry in list.flatten() {
            entries += 1;
            if prefix == STATE_PREFIX && entry.file_name().to_string_lossy().ends_with(".state") {
                sandboxes += 1;
            }
        }
    }
    (sandboxes, entries)
}

/// The `--root` argument of every runsc process this host started, to find them by.
pub fn root_argument(settings: &GvisorSettings) -> String {
    let state = settings
        .state_dir
        .join(format!("{STATE_PREFIX}{}", std::process::id()));
    format!("--root={}", state.display())
}

/// This host process's private `runsc --root` and its bundles' folder, shared by every gvisor
/// runtime and sandbox of the process (they are named by its pid) and removed with the last.
struct HostFolders {
    state: PathBuf,
    bundles: PathBuf,
}

/// The live [`HostFolders`] of each state folder base; the lock also orders making them against
/// removing them.
static HOST_FOLDERS: Mutex<Option<HashMap<PathBuf, Weak<HostFolders>>>> = Mutex::new(None);

impl HostFolders {
    fn shared(base: &Path) -> Result<Arc<HostFolders>> {
        let mut live = HOST_FOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let live = live.get_or_insert_with(HashMap::new);
        if let Some(folders) = live.get(base).and_then(Weak::upgrade) {
            return Ok(folders);
        }
        let pid = std::process::id();
        let folders = Arc::new(HostFolders {
            state: base.join(format!("{STATE_PREFIX}{pid}")),
            bundles: base.join(format!("{BUNDLE_PREFIX}{pid}")),
        });
        for folder in [&folders.state, &folders.bundles] {
            std::fs::create_dir_all(folder).map_err(|source| Error::Spawn {
                path: folder.clone(),
                source,
            })?;
        }
        live.insert(base.to_path_buf(), Arc::downgrade(&folders));
        Ok(folders)
    }
}

impl Drop for HostFolders {
    fn drop(&mut self) {
        let mut live = HOST_FOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        let base = self.state.parent().unwrap_or(Path::new("/"));
        // A runtime made since the last one went has made (and uses) them again.
        if let Some(live) = live.as_mut() {
            if live.get(base).is_some_and(|f| f.strong_count() > 0) {
                return;
            }
            live.remove(base);
        }
        let _ = std::fs::remove_dir_all(&self.bundles);
        // Every sandbox was deleted before its control let go; a state file left means one was
        // not, and is left for the next host's reaping rather than orphaned here.
        if let Err(error) = std::fs::remove_dir(&self.state) {
            tracing::warn!(state = %self.state.display(), %error, "runsc state left behind");
        }
    }
}

impl Runtime for GvisorRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let closure = self.closure(&launch.worker_path)?;
            // The docker runtime's container name, so tools and checks name both the same way.
            let id = format!("tfsandbox-{}", launch.sandbox_id);
            let bundle = self.folders.bundles.join(&id);
            let made = |source| Error::Spawn {
                path: bundle.clone(),
                source,
            };
            std::fs::create_dir_all(bundle.join("rootfs")).map_err(made)?;
            let bundle_guard = Bundle(bundle.clone());
            let spec = self.spec(&closure, &bundle.join("rootfs"), &id, launch)?;
            spec.save(bundle.join("config.json"))
                .map_err(|e| Error::Confinement {
                    sandbox: launch.sandbox_id.clone(),
                    message: format!("writing config.json: {e}"),
                })?;
            let mut command = runsc(&self.settings, &self.folders.state);
            let host = rustix::process::getpid();
            // SAFETY: only async-signal-safe system calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    // `runsc run` dies with the host (and its attached sandbox with it), even
                    // SIGKILLed; the next host's runtime then deletes what is left in its state.
                    // Tied to the spawning thread: tokio's worker threads live as long as it.
                    rustix::process::set_parent_process_death_signal(Some(
                        rustix::process::Signal::KILL,
                    ))?;
                    if rustix::process::getppid() != Some(host) {
                        return Err(std::io::Error::other("the host is gone"));
                    }
                    Ok(())
                });
            }
            command
                .arg("run")
                .arg(format!("--bundle={}", bundle.display()))
                .arg(&id)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = command.spawn().map_err(|source| Error::Spawn {
                path: self.settings.runsc_path.clone(),
                source,
            })?;
            let (stdin, stdout, stderr) =
                match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                    (Some(i), Some(o), Some(e)) => (i, o, e),
                    _ => unreachable!("all three were asked to be piped"),
                };
            tracing::debug!(sandbox = %launch.sandbox_id, pid = child.id(), "runsc started");
            Ok(Worker {
                stdin: Box::new(stdin),
                stdout: Box::new(stdout),
                stderr: Box::new(stderr),
                control: Box::new(GvisorControl {
                    child,
                    settings: self.settings.clone(),
                    id,
                    bundle: Some(bundle_guard),
                    reaped: false,
                    folders: self.folders.clone(),
                }),
            })
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        self.mounts.inside(host)
    }
}

/// A sandbox's bundle folder: mount points and config.json only, removed with it.
struct Bundle(PathBuf);

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct GvisorControl {
    child: Child,
    settings: GvisorSettings,
    id: String,
    bundle: Option<Bundle>,
    /// Whether the sandbox was deleted after `runsc run` ended.
    reaped: bool,
    /// Last: the folders go after the bundle and the sandbox's state.
    folders: Arc<HostFolders>,
}

impl WorkerControl for GvisorControl {
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit> {
        async move {
            // runsc run ends as the worker did: 128 + N when signal N ended it.
            let status = match self.child.wait().await {
                Ok(status) => match status.code() {
                    Some(code) => WorkerExit::from_shell_code(code.into()),
                    None => WorkerExit::from_status(status),
                },
                Err(error) => WorkerExit::unknown(error),
            };
            reap(&self.settings, &self.folders.state, &self.id).await;
            self.bundle.take();
            self.reaped = true;
            status
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            reap(&self.settings, &self.folders.state, &self.id).await;
            let _ = self.child.start_kill();
        }
        .boxed()
    }

    fn host_pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for GvisorControl {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.start_kill();
            reap_blocking(&self.settings, &self.folders.state, &self.id);
        }
    }
}
