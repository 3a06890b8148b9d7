//! How a worker is started: one [`Runtime`] trait, one implementation per kind of sandbox.
//!
//! A runtime hands back the worker's stdio; the transport on top is the same for every runtime.

pub mod cgroup;
#[cfg(feature = "docker")]
pub mod docker;
pub mod gpu_passthrough;
#[cfg(feature = "gvisor")]
pub mod gvisor;
#[cfg(feature = "docker")]
pub mod model_access;
pub mod process;

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::{Config, RuntimeConfig};
use crate::error::{Error, Result};
use crate::exit::WorkerExit;

/// The folders in `tmp` named `<prefix><pid><separator>...` whose pid is gone (in this pid
/// namespace): what hosts killed before they could clean up left behind.
pub(crate) fn orphaned_folders(tmp: &Path, prefix: &str, separator: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            name.to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split_once(separator))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

/// What a runtime needs to start one worker.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Names the sandbox in logs and in the runtime's own objects.
    pub sandbox_id: String,
    /// The worker binary on the host.
    pub worker_path: PathBuf,
    /// Passed to the worker as its `TFSANDBOX_LOG` filter.
    pub worker_log: String,
    /// The largest message either side sends (`Config::max_message_bytes`).
    pub max_message_bytes: usize,
    /// `Config::session`.
    pub session: crate::config::SessionConfig,
    /// How long the worker may take to start (`Config::start_timeout`): a runtime that waits on
    /// the worker during its start waits no longer.
    pub start_timeout: std::time::Duration,
}

impl Launch {
    /// The worker's environment, which every runtime hands it as it is.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        use tfsandbox_proto::worker_env;
        let mut env = vec![
            (worker_env::LOG, self.worker_log.clone()),
            (
                worker_env::MAX_MESSAGE_BYTES,
                self.max_message_bytes.to_string(),
            ),
        ];
        let config_proto = self.session.to_config_proto();
        if !config_proto.is_empty() {
            env.push((worker_env::SESSION_CONFIG, hex::encode(config_proto)));
        }
        if self.session.disable_xla_compilation {
            env.push((worker_env::XLA_COMPILATION, "off".into()));
        }
        env
    }
}

/// A started worker: its stdio and the means to stop it.
pub struct Worker {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    pub control: Box<dyn WorkerControl>,
}

/// The model folders a sandbox may load from, each with its name under `/models`.
#[derive(Debug, Clone, Default)]
pub struct ModelMounts {
    /// (canonical host folder, name), in the order given.
    entries: Vec<(PathBuf, String)>,
}

impl ModelMounts {
    /// Names each folder by its own name, made unique with `-2`, `-3`, ...
    pub fn new(dirs: &[PathBuf]) -> Result<ModelMounts> {
        let mut entries: Vec<(PathBuf, String)> = Vec::new();
        for dir in dirs {
            let host = dir.canonicalize().map_err(|e| Error::ModelPath {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            if !host.is_dir() {
                return Err(Error::ModelPath {
                    path: dir.clone(),
                    reason: "not a directory".into(),
                });
            }
            if entries.iter().any(|(h, _)| *h == host) {
                continue;
            }
            let base = host
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            let mut name = base.clone();
            let mut n = 1;
            while entries.iter().any(|(_, taken)| *taken == name) {
                n += 1;
                name = format!("{base}-{n}");
            }
            entries.push((host, name));
        }
        Ok(ModelMounts { entries })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.entries.iter().map(|(h, n)| (h.as_path(), n.as_str()))
    }

    /// Where a sandbox that mounts these sees `host`, which must be one of them.
    pub fn inside(&self, host: &Path) -> Result<String> {
        let bad = |reason: String| Error::ModelPath {
            path: host.to_path_buf(),
            reason,
        };
        let canonical = host.canonicalize().map_err(|e| bad(e.to_string()))?;
        self.entries
            .iter()
            .find(|(h, _)| *h == canonical)
            .map(|(_, name)| format!("/models/{name}"))
            .ok_or_else(|| bad("not mounted in this sandbox: list it in Config::models (--model) before the sandbox starts".into()))
    }
}

/// The runtime `config` names, mounting its model folders.
pub async fn for_config(config: &Config) -> Result<Box<dyn Runtime>> {
    let mounts = ModelMounts::new(&config.models)?;
    Ok(match &config.runtime {
        RuntimeConfig::Process(settings) => Box::new(
            process::ProcessRuntime::new(settings.clone(), mounts).with_gpus(config.gpu.clone()),
        ),
        #[cfg(feature = "docker")]
        RuntimeConfig::Docker(settings) => Box::new(
            docker::DockerRuntime::connect(settings.clone(), mounts)
                .await?
                .with_gpus(config.gpu.clone()),
        ),
        #[cfg(feature = "gvisor")]
        RuntimeConfig::Gvisor(settings) => {
            Box::new(gvisor::GvisorRuntime::new(settings.clone(), mounts)?)
        }
        #[allow(unreachable_patterns)] // Only when a runtime's feature is off.
        other => {
            return Err(Error::RuntimeNotBuilt {
                runtime: other.kind(),
            })
        }
    })
}

pub trait Runtime: Send + Sync {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>>;
    /// Where a worker of this runtime sees a model directory that lies at `host` on the host.
    fn model_path(&self, host: &Path) -> Result<String>;
}

pub trait WorkerControl: Send + Sync {
    /// Resolves once the worker has exited, with how it ended. Everything the runtime made for
    /// it is cleaned up by then.
    fn wait(&mut self) -> BoxFuture<'_, WorkerExit>;
    /// Stops the worker at once; `wait` then resolves.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
    /// The host pid of the process the runtime started (the jailer, the engine's shim...), where
    /// the host has one of its own.
    fn host_pid(&self) -> Option<u32>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_folders_of_pids_that_are_gone_are_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id();
        // No pid is this high (the kernel's pid_max is at most 2^22).
        for name in [
            "tfsandbox-999999999-3".to_string(),
            format!("tfsandbox-{me}-3"),
            "tfsandbox-x-3".into(),
            "other-999999999-3".into(),
        ] {
            std::fs::create_dir(tmp.path().join(name)).unwrap();
        }
        assert_eq!(
            super::orphaned_folders(tmp.path(), "tfsandbox-", "-"),
            vec![tmp.path().join("tfsandbox-999999999-3")]
        );
    }
}
