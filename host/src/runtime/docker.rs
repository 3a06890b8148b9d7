//! The `docker` runtime: the worker in a locked-down container of the local engine, talked to over
//! the container's attached stdin/stdout.
//!
//! No network, no capabilities, read-only root, a small noexec /tmp, CPU/memory/pids limits,
//! no new privileges, user nobody, removed on exit. Each model folder is bind-mounted read-only at
//! `/models/<name>`; nothing else of the host is visible.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions, MountType,
    ResourcesUlimits,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, EventsOptions, KillContainerOptions,
    ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::StreamReader;

use super::{Launch, ModelMounts, Runtime, Worker, WorkerControl};
use crate::config::DockerSettings;
use crate::error::{Error, Result};
use crate::gpu::{self, GpuSettings, Gpus};
use crate::image;
use crate::procfs;

/// Marks every container tfsandbox makes.
pub const LABEL: &str = "tfsandbox";
/// `<pid>:<start time>` of the host process that owns a container.
pub const OWNER_LABEL: &str = "tfsandbox.owner";

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
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![LABEL.to_string()],
            )])),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("listing containers", e))?;
        for container in containers {
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
            }
        }
        Ok(())
    }

    async fn image(&self, worker: &Path) -> Result<String> {
        if let Some(image) = &self.settings.image {
            return Ok(image.clone());
        }
        let closure = self.gpu.closure(worker)?;
        Ok(image::ensure_loaded(&self.docker, &closure, self.settings.show_progress).await?)
    }

    /// The container as the engine is asked to make it.
    pub fn container_body(&self, image: String, launch: &Launch) -> ContainerCreateBody {
        Self::container_body_for(&self.settings, &self.mounts, &self.gpu.gpus, image, launch)
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
    ) -> ContainerCreateBody {
        let s = settings;
        let ulimit = |name: &str, value: i64| ResourcesUlimits {
            name: Some(name.into()),
            soft: Some(value),
            hard: Some(value),
        };
        let mounts = mounts
            .iter()
            .map(|(host, name)| Mount {
                target: Some(format!("/models/{name}")),
                source: Some(host.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                bind_options: Some(MountBindOptions {
                    non_recursive: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        ContainerCreateBody {
            image: Some(image),
            user: Some(image::oci::NOBODY.into()),
            env: Some(vec![format!("TFSANDBOX_LOG={}", launch.worker_log)]),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // When the host's attach connection goes, the worker's stdin closes and it exits.
            stdin_once: Some(true),
            // A tty would mangle the binary protocol.
            tty: Some(false),
            network_disabled: Some(true),
            labels: Some(HashMap::from([
                (LABEL.to_string(), "1".to_string()),
                (OWNER_LABEL.to_string(), owner_of_this_process()),
                ("tfsandbox.sandbox".to_string(), launch.sandbox_id.clone()),
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
                // engine's default (no ptrace, no socket(), no fork).
                security_opt: Some(vec![
                    "no-new-privileges".into(),
                    format!(
                        "seccomp={}",
                        tfsandbox_jailer::seccomp::docker_profile_for(policy(gpus))
                    ),
                ]),
                ulimits: Some(vec![
                    ulimit("nofile", s.nofile),
                    ulimit("nproc", s.nproc),
                    ulimit("core", 0),
                ]),
                ipc_mode: Some("none".into()),
                // The engine's default log driver writes every byte of stdout (the protocol) to
                // a JSON file: on disk, unbounded, and most of the attach path's cost. The host
                // forwards stderr itself.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                auto_remove: Some(true),
                privileged: Some(false),
                init: Some(false),
                mounts: Some(mounts),
                device_requests: gpu::device_request(gpus).map(|request| vec![request]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Runtime for DockerRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let image = self.image(&launch.worker_path).await?;
            let name = format!("tfsandbox-{}", launch.sandbox_id);
            let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
            let created = self
                .docker
                .create_container(Some(options), self.container_body(image.clone(), launch))
                .await
                .map_err(|e| engine(&format!("creating container {name} from {image}"), e))?;
            let id = created.id;
            // Waiting starts before the container does (as `docker run --rm` does): once it is
            // auto-removed there is nothing left to ask.
            let control = DockerControl { docker: self.docker.clone(), id: id.clone(), exit: Some(spawn_wait(&self.docker, &id)) };
            // From here on the container exists: any failure removes it.
            match attach_and_start(&self.docker, &id).await {
                Ok((stdin, stdout, stderr)) => {
                    tracing::debug!(sandbox = %launch.sandbox_id, container = %id, "worker container started");
                    Ok(Worker { stdin, stdout, stderr, control: Box::new(control) })
                }
                Err(error) => {
                    let options = RemoveContainerOptions { force: true, ..Default::default() };
                    let _ = self.docker.remove_container(&id, Some(options)).await;
                    Err(error)
                }
            }
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        self.mounts.inside(host)
    }
}

type Stdio = (
    Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
);

/// Attaches before starting, so not one byte of output is missed, and splits the multiplexed
/// output back into the protocol (stdout) and the log (stderr).
async fn attach_and_start(docker: &Docker, id: &str) -> Result<Stdio> {
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
                Ok(LogOutput::StdOut { message }) => out_tx.send(Ok(message)).await.is_ok(),
                Ok(LogOutput::StdErr { message }) => {
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
    Ok((
        Box::new(attached.input),
        Box::new(StreamReader::new(ReceiverStream::new(out_rx))),
        Box::new(StreamReader::new(ReceiverStream::new(err_rx))),
    ))
}

/// Waits for the container to exit and be removed; resolves to how it ended.
fn spawn_wait(docker: &Docker, id: &str) -> oneshot::Receiver<String> {
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
        let mut status = match code {
            Ok(code) if code > 128 => {
                format!("signal: {} ({})", code - 128, signal_name(code - 128))
            }
            Ok(code) => format!("exit status: {code}"),
            Err(error) => format!("unknown status: {error}"),
        };
        if oom {
            status.push_str(", out of memory: killed at the container's memory limit");
        }
        let _ = tx.send(status);
    });
    rx
}

struct DockerControl {
    docker: Docker,
    id: String,
    exit: Option<oneshot::Receiver<String>>,
}

impl WorkerControl for DockerControl {
    fn wait(&mut self) -> BoxFuture<'_, String> {
        async move {
            match self.exit.as_mut() {
                Some(exit) => exit
                    .await
                    .unwrap_or_else(|_| "unknown status: the wait was lost".into()),
                None => "unknown status".into(),
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

fn signal_name(signal: i64) -> &'static str {
    match signal {
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => "signal",
    }
}

fn policy(gpus: &Gpus) -> tfsandbox_jailer::seccomp::Policy {
    if gpus.is_none() {
        tfsandbox_jailer::seccomp::Policy::Cpu
    } else {
        tfsandbox_jailer::seccomp::Policy::Gpu
    }
}

fn engine(action: &str, error: bollard::errors::Error) -> Error {
    Error::Engine {
        action: action.to_string(),
        message: error.to_string(),
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
