//! A pool of sandboxes serving one model; each call goes to the least loaded.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::try_join_all;

use crate::config::Config;
use crate::error::Result;
use crate::sandbox::{LoadOptions, Model, Predict, Sandbox};
use crate::tensor::Tensor;
use crate::wire::ModelMetadata;

/// `size` sandboxes, each with its own worker holding the same model. A worker that dies is
/// restarted by its sandbox while the others keep answering.
pub struct Pool {
    members: Vec<Member>,
    /// Where the search for the least loaded starts, so ties are spread.
    next: AtomicUsize,
}

struct Member {
    sandbox: Sandbox,
    model: Model,
    in_flight: AtomicUsize,
}

impl Pool {
    /// Starts `size` sandboxes (at least one) from `config` and loads the model in `dir` in each.
    pub async fn start(config: Config, dir: impl AsRef<Path>, size: usize) -> Result<Pool> {
        Pool::start_with(config, dir, size, LoadOptions::default()).await
    }

    /// As [`Pool::start`], loading the model with `options` (e.g. the id its errors name).
    pub async fn start_with(
        config: Config,
        dir: impl AsRef<Path>,
        size: usize,
        options: LoadOptions,
    ) -> Result<Pool> {
        let dir = dir.as_ref();
        let mut config = config;
        if !config.models.iter().any(|m| m == dir) {
            config.models.push(dir.to_path_buf());
        }
        let members = try_join_all((0..size.max(1)).map(|_| {
            let config = config.clone();
            let options = options.clone();
            async move {
                let sandbox = Sandbox::start(config).await?;
                let model = sandbox.load_model_with(dir, options).await?;
                Ok::<_, crate::Error>(Member {
                    sandbox,
                    model,
                    in_flight: AtomicUsize::new(0),
                })
            }
        }))
        .await?;
        Ok(Pool {
            members,
            next: AtomicUsize::new(0),
        })
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    pub fn sandboxes(&self) -> impl Iterator<Item = &Sandbox> {
        self.members.iter().map(|m| &m.sandbox)
    }

    /// The digest of the model's folder as the first sandbox loaded it
    /// ([`crate::digest::folder`]).
    pub fn digest(&self) -> &crate::digest::FolderDigest {
        self.members[0].model.digest()
    }

    /// What the model's ops can do, as the first sandbox's worker found them.
    pub fn capabilities(&self) -> Option<&[tfsandbox_scan::Capability]> {
        self.members[0].model.capabilities()
    }

    /// Signatures, as the first sandbox reported them.
    pub fn metadata(&self) -> &ModelMetadata {
        self.members[0].model.metadata()
    }

    /// Runs `serving_default` on the least loaded sandbox.
    pub async fn predict<K: Into<String>>(
        &self,
        inputs: impl IntoIterator<Item = (K, Tensor)>,
    ) -> Result<BTreeMap<String, Tensor>> {
        self.predict_with(Predict::new(inputs)).await
    }

    pub async fn predict_with(&self, predict: Predict) -> Result<BTreeMap<String, Tensor>> {
        let member = self.least_loaded();
        member.in_flight.fetch_add(1, Ordering::SeqCst);
        let _done = InFlight(&member.in_flight);
        member.model.predict_with(predict).await
    }

    /// Calls in flight on each sandbox, in order.
    pub fn load(&self) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| m.in_flight.load(Ordering::SeqCst))
            .collect()
    }

    fn least_loaded(&self) -> &Member {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .min_by_key(|m| m.in_flight.load(Ordering::SeqCst))
            .expect("a pool has members")
    }

    /// Shuts every sandbox down, draining its calls; returns how each worker ended.
    pub async fn shutdown(self) -> Vec<String> {
        futures::future::join_all(self.members.into_iter().map(|m| {
            drop(m.model);
            m.sandbox.shutdown()
        }))
        .await
    }
}

/// Counts a call out of its sandbox however it ends (also when its future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
