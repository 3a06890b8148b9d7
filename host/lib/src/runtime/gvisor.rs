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

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use tokio::process::{Child, Command};

use tfsandbox_jailer::plan::NOBODY;

use super::{Launch, ModelMounts, Runtime, Worker, WorkerControl};
use crate::closure::{Closure, Variant};
use crate::config::GvisorSettings;
use crate::error::{Error, Result};
use crate::exit::WorkerExit;

/// How long `runsc kill` / `runsc delete` may take before they are given up on.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each host process keeps its runsc state, in a folder named by its pid.
const STATE_PREFIX: &str = "tfsandbox-runsc-";

pub struct GvisorRuntime {
    settings: GvisorSettings,
    mounts: ModelMounts,
    /// This host process's private `runsc --root`.
    state: PathBuf,
}

impl GvisorRuntime {
    pub fn new(settings: GvisorSettings, mounts: ModelMounts) -> Result<GvisorRuntime> {
        let base = settings.state_dir.clone();
        std::fs::create_dir_all(&base).map_err(|source| Error::Spawn {
            path: base.clone(),
            source,
        })?;
        reap_orphans(&settings, &base);
        let state = base.join(format!("{STATE_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&state).map_err(|source| Error::Spawn {
            path: state.clone(),
            source,
        })?;
        Ok(GvisorRuntime {
            settings,
            mounts,
            state,
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
        for entry in &closure.entries {
            mounts.push(bind(&entry.image_path, &entry.host_path)?);
        }
        for (host, name) in self.mounts.iter() {
            mounts.push(bind(&format!("/models/{name}"), host)?);
        }
        // Mount points must exist in a read-only root: made here, empty, on the host.
        for mount in &mounts {
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
            .build()
            .map_err(oci)?;
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
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

/// `runsc` with the settings' global flags and this state folder.
fn runsc(settings: &GvisorSettings, state: &Path) -> Command {
    let mut command = Command::new(&settings.runsc_path);
    command
        .arg(format!("--root={}", state.display()))
        .arg("--network=none")
        .arg(format!("--platform={}", settings.platform))
        .env_clear()
        .stdin(Stdio::null());
    command
}

/// Kills and deletes container `id`, whatever its state; best effort, bounded in time.
async fn reap(settings: &GvisorSettings, state: &Path, id: &str) {
    let mut kill = runsc(settings, state);
    kill.args(["kill", "--all", id, "KILL"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = tokio::time::timeout(REAP_TIMEOUT, kill.status()).await;
    let mut delete = runsc(settings, state);
    delete
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(Ok(status)) = tokio::time::timeout(REAP_TIMEOUT, delete.status()).await {
        if !status.success() {
            tracing::debug!(container = id, %status, "runsc delete --force failed");
        }
    }
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
                for verb in [
                    &["kill", "--all", id, "KILL"][..],
                    &["delete", "--force", id][..],
                ] {
                    let _ = std::process::Command::new(&settings.runsc_path)
                        .arg(format!("--root={}", state.display()))
                        .args(verb)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
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

/// Each host process's bundles lie in a folder named by its pid, beside the state.
const BUNDLE_PREFIX: &str = "tfsandbox-bundles-";

impl Runtime for GvisorRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let closure = self.closure(&launch.worker_path)?;
            // The docker runtime's container name, so tools and checks name both the same way.
            let id = format!("tfsandbox-{}", launch.sandbox_id);
            let bundles = self
                .settings
                .state_dir
                .join(format!("{BUNDLE_PREFIX}{}", std::process::id()));
            let bundle = bundles.join(&id);
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
            let mut command = runsc(&self.settings, &self.state);
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
                    state: self.state.clone(),
                    id,
                    bundle: Some(bundle_guard),
                }),
            })
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        self.mounts.inside(host)
    }
}

impl Drop for GvisorRuntime {
    fn drop(&mut self) {
        // Empty once every sandbox is reaped; fails, as it should, while one is not.
        let _ = std::fs::remove_dir(&self.state);
        let _ = std::fs::remove_dir(
            self.settings
                .state_dir
                .join(format!("{BUNDLE_PREFIX}{}", std::process::id())),
        );
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
    state: PathBuf,
    id: String,
    bundle: Option<Bundle>,
}

impl WorkerControl for GvisorControl {
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit> {
        async move {
            let status = match self.child.wait().await {
                Ok(status) => WorkerExit::from_status(status),
                Err(error) => WorkerExit::unknown(error),
            };
            reap(&self.settings, &self.state, &self.id).await;
            self.bundle.take();
            status
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            reap(&self.settings, &self.state, &self.id).await;
            let _ = self.child.start_kill();
        }
        .boxed()
    }

    fn host_pid(&self) -> Option<u32> {
        self.child.id()
    }
}
