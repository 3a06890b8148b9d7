//! How a sandbox is started.

use std::path::PathBuf;
use std::time::Duration;

use tfsandbox_proto::transport::tuning;

use crate::error::{Error, Result};

/// The kind of sandbox a worker runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// A child process of the host; needs no daemon.
    #[default]
    Process,
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
    /// How long any one call may take.
    pub call_timeout: Duration,
    /// The largest gRPC message either side may send.
    pub max_message_bytes: usize,
}

impl Config {
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
            max_message_bytes: tuning::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}
