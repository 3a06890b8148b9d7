//! The `process` runtime: the worker as a confined child process of the host, no daemon needed.
//!
//! `tfsandbox-jailer` (jailer/) does the confining: namespaces, a fresh root holding only the
//! worker's closure (the same closure the image builder computes) and the models, Landlock,
//! seccomp and rlimits. This side starts it, writes its id maps when it asks (only a process
//! outside its user namespace may), and then speaks the protocol over its stdio.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use tfsandbox_proto::transport::tuning;
use tfsandbox_proto::worker_env;

use tfsandbox_jailer::plan::{Bind, Limit, Plan, Weaker, HANDSHAKE_ASK, HANDSHAKE_GO, NOBODY};

use super::cgroup::{self, Cgroup, CgroupLimits, Hierarchies};
use super::gpu_passthrough::{self, Passthrough};
use super::{Launch, ModelMounts, Runtime, Worker, WorkerControl};
use crate::closure::Closure;
use crate::config::GpuSettings;
use crate::config::ProcessSettings;
use crate::error::{Error, Result};
use crate::exit::WorkerExit;

/// How long the jailer may take to reach the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the processes of an ended sandbox may take to leave its cgroup.
const CGROUP_PATIENCE: Duration = Duration::from_secs(2);

pub struct ProcessRuntime {
    settings: ProcessSettings,
    mounts: ModelMounts,
    gpu: GpuSettings,
}

impl ProcessRuntime {
    pub fn new(settings: ProcessSettings, mounts: ModelMounts) -> ProcessRuntime {
        remove_orphaned_workdirs(&std::env::temp_dir());
        if let Ok(hierarchies) = Hierarchies::of_this_host() {
            hierarchies.remove_orphans();
        }
        ProcessRuntime {
            settings,
            mounts,
            gpu: GpuSettings::default(),
        }
    }

    /// Lets the worker use GPUs: the CUDA closure, the GPUs' device nodes and the host's driver
    /// libraries.
    pub fn with_gpus(mut self, gpu: GpuSettings) -> ProcessRuntime {
        self.gpu = gpu;
        self
    }

    fn jailer_path(&self, worker: &Path) -> Result<PathBuf> {
        let path = match &self.settings.jailer_path {
            Some(path) => path.clone(),
            None => worker.with_file_name("tfsandbox-jailer"),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::WorkerNotFound { looked: vec![path] })
        }
    }

    /// What the sandbox's cgroup bounds.
    fn cgroup_limits(&self) -> CgroupLimits {
        let s = &self.settings;
        CgroupLimits {
            memory_bytes: s.memory_bytes,
            cpus: s.cpus,
            pids: s.pids,
        }
    }

    /// The sandbox's own cgroup, with the settings' limits; `None` only where none can be made
    /// and running without one is allowed (`Weaker::Cgroup`).
    fn cgroup(&self, sandbox: &str) -> Result<Option<Cgroup>> {
        match Hierarchies::of_this_host().and_then(|h| h.create(self.cgroup_limits())) {
            Ok(cgroup) => Ok(Some(cgroup)),
            Err(source) if self.settings.allow_weaker.contains(&Weaker::Cgroup) => {
                tracing::warn!(sandbox, "no cgroup, as allowed: {source}");
                Ok(None)
            }
            Err(source) => Err(Error::NoCgroup {
                sandbox: sandbox.to_string(),
                source,
            }),
        }
    }

    /// What bounds the sandbox as a whole, for its posture report.
    fn bounds(&self, cgroup: Option<&Cgroup>) -> String {
        match cgroup {
            Some(cgroup) => format!("{}: {}", cgroup.kind(), self.cgroup_limits()),
            None => "none (allowed weaker): only the per-process rlimits".into(),
        }
    }

    /// What the jailer is asked for: the root's contents (the closure, the driver's libraries and
    /// device nodes of `gpus`), the limits, then the worker's entry point.
    pub fn jailer_plan(&self, closure: &Closure, root: &Path, gpus: &Passthrough) -> Plan {
        let s = &self.settings;
        let files = closure
            .entries
            .iter()
            .map(|entry| Bind {
                inside: entry.image_path.clone(),
                host: entry.host_path.clone(),
                tree: None,
            })
            .chain(gpus.libraries.iter().map(|(inside, host)| Bind {
                inside: inside.clone(),
                host: host.clone(),
                tree: None,
            }))
            .collect();
        let models = self
            .mounts
            .iter()
            .map(|(host, name)| Bind {
                inside: name.to_string(),
                host: host.to_path_buf(),
                tree: None,
            })
            .collect();
        let mut limits = vec![(Limit::FileSize, s.file_size_bytes)];
        // CUDA reserves address space for all of the GPUs' and the host's memory at start: with
        // GPUs, RLIMIT_AS is not set (bound memory with the docker runtime's cgroup instead).
        if gpus.devices.is_empty() {
            limits.insert(0, (Limit::AddressSpace, s.address_space_bytes));
        }
        limits.extend([
            (Limit::OpenFiles, s.nofile),
            (Limit::Processes, s.nproc),
            (Limit::Core, 0),
        ]);
        if let Some(cpu) = s.cpu_seconds {
            limits.push((Limit::CpuSeconds, cpu));
        }
        Plan {
            root: root.to_path_buf(),
            files,
            models,
            devices: gpus.devices.iter().map(PathBuf::from).collect(),
            tmp_bytes: s.tmp_bytes,
            limits,
            weaker: s.allow_weaker.clone(),
            command: closure.entrypoint().into_iter().map(Into::into).collect(),
        }
    }
}

impl Runtime for ProcessRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let spawn_error = |source| Error::Spawn {
                path: launch.worker_path.clone(),
                source,
            };
            let closure = self.gpu.closure(&launch.worker_path)?;
            let passthrough = gpu_passthrough::host_passthrough(&self.gpu.gpus)?;
            let jailer = self.jailer_path(&launch.worker_path)?;
            // The new root is built on this folder inside the sandbox's own mount namespace; on
            // the host it stays empty and goes with the worker.
            let workdir = Workdir::create().map_err(spawn_error)?;
            let mut cgroup = self.cgroup(&launch.sandbox_id)?;
            let mut plan = self.jailer_plan(&closure, workdir.path(), &passthrough);
            let trees = open_model_trees(&mut plan);
            let mut command = Command::new(&jailer);
            command
                .args(plan.to_args())
                .env_clear()
                // The jailer hands every TFSANDBOX_ variable on to the worker.
                .envs(launch.worker_env())
                .env(worker_env::CGROUP, self.bounds(cgroup.as_ref()))
                .current_dir(workdir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if let Some(cgroup) = &cgroup {
                let fds = cgroup.join_fds();
                // SAFETY: join_self only writes to descriptors the parent holds open, without
                // allocating, which is all a forked child may do before exec.
                unsafe {
                    command.pre_exec(move || cgroup::join_self(&fds));
                }
            }
            if !trees.is_empty() {
                let fds: Vec<i32> = trees.iter().map(|t| t.as_raw_fd()).collect();
                // SAFETY: clearing close-on-exec is one fcntl per descriptor the parent holds
                // open, which is all a forked child may do before exec.
                unsafe {
                    command.pre_exec(move || {
                        for &fd in &fds {
                            let fd = BorrowedFd::borrow_raw(fd);
                            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                        }
                        Ok(())
                    });
                }
            }
            let spawned = command.spawn();
            // The jailer holds its own copies now.
            drop(trees);
            let mut child = spawned.map_err(|source| Error::Spawn {
                path: jailer.clone(),
                source,
            })?;
            if let Some(cgroup) = &mut cgroup {
                cgroup.joined();
            }
            let (mut stdin, mut stdout, mut stderr) =
                match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                    (Some(i), Some(o), Some(e)) => (i, o, e),
                    _ => unreachable!("all three were asked to be piped"),
                };
            let pid = child.id().unwrap_or_default();
            // Larger pipes carry a large tensor in fewer wake-ups; best effort (the kernel caps
            // unprivileged sizes at /proc/sys/fs/pipe-max-size).
            let _ = rustix::pipe::fcntl_setpipe_size(&stdin, tuning::PIPE_BYTES);
            let _ = rustix::pipe::fcntl_setpipe_size(&stdout, tuning::PIPE_BYTES);

            let confined = async {
                let mut asked = [0u8; 1];
                stdout
                    .read_exact(&mut asked)
                    .await
                    .map_err(|e| format!("no handshake: {e}"))?;
                if asked != [HANDSHAKE_ASK] {
                    return Err(format!("unexpected handshake byte {:?}", asked[0]));
                }
                write_id_maps(pid).map_err(|e| format!("writing its id maps: {e}"))?;
                stdin
                    .write_all(&[HANDSHAKE_GO])
                    .await
                    .map_err(|e| format!("answering the handshake: {e}"))?;
                Ok(())
            };
            let outcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, confined).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
            };
            if let Err(problem) = outcome {
                let _ = child.start_kill();
                let mut said = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut said))
                        .await;
                let _ = child.wait().await;
                let said = said.trim();
                let message = if said.is_empty() {
                    problem
                } else {
                    format!("{problem}; the jailer said: {said}")
                };
                return Err(Error::Confinement {
                    sandbox: launch.sandbox_id.clone(),
                    message,
                });
            }
            tracing::debug!(sandbox = %launch.sandbox_id, pid, "worker confined and started");
            Ok(Worker {
                stdin: Box::new(stdin),
                stdout: Box::new(stdout),
                stderr: Box::new(stderr),
                control: Box::new(ProcessControl {
                    child,
                    workdir: Some(workdir),
                    cgroup,
                }),
            })
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        self.mounts.inside(host)
    }
}

/// The prefix of a worker's working folder, with the host's pid after it: whose it is, should the
/// host die before removing it.
const WORKDIR_PREFIX: &str = "tfsandbox-";

/// A worker's working folder: private, and always empty on the host, so removed with a plain
/// rmdir, which needs no descriptor (a host out of descriptors still cleans up).
struct Workdir(PathBuf);

impl Workdir {
    /// `tfsandbox-<pid>-<n>`: the host's pid says whose it is, should one ever be left behind.
    /// mkdir is atomic and follows no symlink, so a name someone else took (a folder, a planted
    /// symlink) fails with EEXIST and the next is tried; the folder made is then ours, 0700.
    /// (Hand-written rather than tempfile's, which pulls a random-number crate for the name.)
    fn create() -> std::io::Result<Workdir> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = tmp.join(format!("{WORKDIR_PREFIX}{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Workdir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Removes the working folders that hosts killed before they could clean up left in `tmp`. Each is
/// empty on the host (the root was built on a tmpfs inside the sandbox's own mount namespace), so
/// only an empty folder of a pid that is gone is removed.
fn remove_orphaned_workdirs(tmp: &Path) {
    for dir in super::orphaned_folders(tmp, WORKDIR_PREFIX, "-") {
        // Fails, as it should, on anything not empty.
        let _ = std::fs::remove_dir(dir);
    }
}

/// Opens each model folder of `plan` as a detached mount (`open_tree`) with the host's own rights
/// and marks its bind to attach that (see `Bind::tree`). Where the host may not (it lacks
/// CAP_SYS_ADMIN, as any user but root does), the jailer binds the path, which then works for
/// folders the host's user may enter: the jailer's nobody is that user outside. With root as the
/// host, nobody is nobody outside too, and only the opened mount reaches a model below a folder
/// private to root.
fn open_model_trees(plan: &mut Plan) -> Vec<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let mut trees = Vec::new();
    for bind in &mut plan.models {
        match rustix::mount::open_tree(
            rustix::fs::CWD,
            &bind.host,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        ) {
            Ok(tree) => {
                bind.tree = Some(tree.as_raw_fd());
                trees.push(tree);
            }
            Err(errno) => {
                tracing::debug!(path = %bind.host.display(), %errno, "open_tree: the jailer binds the path instead");
            }
        }
    }
    trees
}

/// Maps 65534 inside to the host's own ids, or to nobody when the host is root: a worker that
/// broke out of every other layer would still own nothing.
fn write_id_maps(pid: u32) -> std::io::Result<()> {
    let outside_uid = match rustix::process::geteuid().as_raw() {
        0 => NOBODY,
        uid => uid,
    };
    let outside_gid = match rustix::process::getegid().as_raw() {
        0 => NOBODY,
        gid => gid,
    };
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    std::fs::write(
        format!("/proc/{pid}/uid_map"),
        format!("{NOBODY} {outside_uid} 1\n"),
    )?;
    std::fs::write(
        format!("/proc/{pid}/gid_map"),
        format!("{NOBODY} {outside_gid} 1\n"),
    )?;
    Ok(())
}

struct ProcessControl {
    child: Child,
    workdir: Option<Workdir>,
    cgroup: Option<Cgroup>,
}

impl WorkerControl for ProcessControl {
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit> {
        async move {
            let mut status = match self.child.wait().await {
                Ok(status) => WorkerExit::from_status(status),
                Err(error) => WorkerExit::unknown(error),
            };
            // Reaped: its working directory and its cgroup can go, whatever is left in the
            // cgroup killed.
            self.workdir.take();
            if let Some(cgroup) = self.cgroup.take() {
                status.oom = cgroup.oom_kills() > 0;
                cgroup.remove(CGROUP_PATIENCE).await;
            }
            status
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            // Fails only if it already exited, which is what was wanted. The sandbox's pid 1 dies
            // with the jailer (its parent-death signal), and every process of the sandbox with it;
            // its cgroup holds them all, should one have left the namespace.
            let _ = self.child.start_kill();
            if let Some(cgroup) = &self.cgroup {
                cgroup.kill_all();
            }
        }
        .boxed()
    }

    fn host_pid(&self) -> Option<u32> {
        self.child.id()
    }
}
