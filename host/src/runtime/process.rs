//! The `process` runtime: the worker as a child process of the host, talked to over its pipes.

use std::path::Path;
use std::process::Stdio;

use futures::future::BoxFuture;
use futures::FutureExt;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use super::{Launch, Runtime, Worker, WorkerControl};
use crate::error::{Error, Result};

#[derive(Debug, Default, Clone)]
pub struct ProcessRuntime;

impl Runtime for ProcessRuntime {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<Worker>> {
        async move {
            let spawn_error = |source| Error::Spawn {
                path: launch.worker_path.clone(),
                source,
            };
            // A working directory of its own, removed with the worker.
            let workdir = tempfile::Builder::new()
                .prefix("tfsandbox-")
                .tempdir()
                .map_err(spawn_error)?;
            let mut child = Command::new(&launch.worker_path)
                .env_clear()
                .env("TFSANDBOX_LOG", &launch.worker_log)
                .current_dir(workdir.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(spawn_error)?;
            let (stdin, stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => unreachable!("all three were asked to be piped"),
            };
            tracing::debug!(sandbox = %launch.sandbox_id, pid = child.id(), "worker process started");
            Ok(Worker {
                stdin: Box::new(stdin),
                stdout: Box::new(stdout),
                stderr: Box::new(stderr),
                control: Box::new(ProcessControl {
                    child,
                    workdir: Some(workdir),
                }),
            })
        }
        .boxed()
    }

    fn model_path(&self, host: &Path) -> Result<String> {
        let bad = |reason: String| Error::ModelPath {
            path: host.to_path_buf(),
            reason,
        };
        // Without a mount namespace the worker sees host paths as they are.
        let absolute = host.canonicalize().map_err(|e| bad(e.to_string()))?;
        absolute
            .into_os_string()
            .into_string()
            .map_err(|_| bad("the path is not UTF-8".into()))
    }
}

struct ProcessControl {
    child: Child,
    workdir: Option<TempDir>,
}

impl WorkerControl for ProcessControl {
    fn wait(&mut self) -> BoxFuture<'_, String> {
        async move {
            let status = match self.child.wait().await {
                Ok(status) => status.to_string(),
                Err(error) => format!("unknown status: {error}"),
            };
            // Reaped: its working directory can go.
            self.workdir.take();
            status
        }
        .boxed()
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        async move {
            // Fails only if it already exited, which is what was wanted.
            let _ = self.child.start_kill();
        }
        .boxed()
    }
}
