//! How a worker is started: one [`Runtime`] trait, one implementation per kind of sandbox.
//!
//! A runtime hands back the worker's stdio; the transport on top is the same for every runtime.

pub mod process;

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Result;

/// What a runtime needs to start one worker.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Names the sandbox in logs and in the runtime's own objects.
    pub sandbox_id: String,
    /// The worker binary on the host.
    pub worker_path: PathBuf,
    /// Passed to the worker as its `TFSANDBOX_LOG` filter.
    pub worker_log: String,
}

/// A started worker: its stdio and the means to stop it.
pub struct Worker {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub stderr: Box<dyn AsyncRead + Send + Unpin>,
    pub control: Box<dyn WorkerControl>,
}

pub trait Runtime: Send + Sync {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>>;
    /// Where a worker of this runtime sees a model directory that lies at `host` on the host.
    fn model_path(&self, host: &Path) -> Result<String>;
}

pub trait WorkerControl: Send + Sync {
    /// Resolves once the worker has exited, with how it ended ("exit status: 1",
    /// "signal: 9 (SIGKILL)"). Everything the runtime made for it is cleaned up by then.
    fn wait(&mut self) -> BoxFuture<'_, String>;
    /// Stops the worker at once; `wait` then resolves.
    fn kill(&mut self) -> BoxFuture<'_, ()>;
}
