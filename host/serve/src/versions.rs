//! Model versions as TensorFlow Serving lays them out (`<base>/<N>/saved_model.pb`): which are
//! served, and the switch from one to the next.
//!
//! Each version runs in its own sandbox pool, with only that version's folder mounted. A new
//! version is loaded into a fresh pool before it replaces the old one, and the old pool is shut
//! down only once the calls that already hold it have finished, so no call fails during a switch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tfsandbox::Config;
use tfsandbox::Error;
use tfsandbox::LoadOptions;
use tfsandbox::Pool;

/// Which of the versions found are served (TensorFlow Serving's `model_version_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions (TensorFlow Serving's default is the latest one).
    Latest(usize),
    All,
    Specific(BTreeSet<i64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    fn aspired(&self, found: &BTreeSet<i64>) -> BTreeSet<i64> {
        match self {
            VersionPolicy::Latest(n) => found.iter().rev().take((*n).max(1)).copied().collect(),
            VersionPolicy::All => found.clone(),
            VersionPolicy::Specific(wanted) => found.intersection(wanted).copied().collect(),
        }
    }
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub name: String,
    /// Holds one folder per version, named by its number.
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
    /// `version_labels`: a name for a version, which `ModelSpec.version_label` may ask for.
    pub labels: std::collections::BTreeMap<String, i64>,
}

/// Where a version is in its life, with TensorFlow Serving's numbers (`ModelVersionStatus.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Loading = 20,
    Available = 30,
    Unloading = 40,
    End = 50,
}

#[derive(Debug, Clone)]
pub struct VersionStatus {
    pub state: State,
    /// Why loading failed, with the gRPC code it failed with.
    pub error: Option<(tonic::Code, String)>,
}

/// A version that answers calls.
pub struct Version {
    pub number: i64,
    pub pool: Pool,
    /// Merges its Predict requests (`--enable_batching`).
    pub batcher: Option<Arc<crate::batching::Batcher>>,
    /// Its share of the memory budget, given back when the version is gone.
    _memory: Option<Reservation>,
}

/// The memory promised to the sandboxes of every served version together (`--max_total_memory`):
/// each sandbox counts at its bound, so a version that would pass the total is not started.
#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    promised: Mutex<u64>,
}

impl MemoryBudget {
    pub fn new(total: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            total,
            promised: Mutex::new(0),
        })
    }

    /// Promises `bytes`, or says why not.
    fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, String> {
        let mut promised = self.promised.lock().unwrap_or_else(|e| e.into_inner());
        let left = self.total.saturating_sub(*promised);
        if bytes > left {
            return Err(format!(
                "not loaded: its sandboxes may use {bytes} bytes of memory, and only {left} of \
                 --max_total_memory {} are left",
                self.total
            ));
        }
        *promised += bytes;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Memory promised to one version's sandboxes.
#[derive(Debug)]
struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut promised = self
            .budget
            .promised
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *promised = promised.saturating_sub(self.bytes);
    }
}

/// One served model: its versions and their states. Its name and base path are fixed; a reload
/// may change which versions it wants and its labels.
pub struct ServedModel {
    pub name: String,
    pub base_path: PathBuf,
    policy: RwLock<VersionPolicy>,
    labels: RwLock<BTreeMap<String, i64>>,
    state: RwLock<ModelState>,
}

#[derive(Default)]
struct ModelState {
    ready: BTreeMap<i64, Arc<Version>>,
    status: BTreeMap<i64, VersionStatus>,
}

/// How versions are started.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// The sandbox settings; each version adds its own folder to `models`.
    pub config: Config,
    /// Sandboxes per version.
    pub sandboxes: usize,
    /// How long a retired version waits for the calls that hold it before it is stopped anyway.
    pub drain_timeout: Duration,
    /// Load version folders that are symlinks. Off: such a folder is refused, since mounting it
    /// would mount whatever host folder it points to.
    pub follow_symlinks: bool,
    /// MetaGraph tags to load; empty: `serve`.
    pub tags: Vec<String>,
    /// The memory every version's sandboxes may use together; `None`: no bound.
    pub budget: Option<Arc<MemoryBudget>>,
    /// Where loads and refusals are recorded.
    pub audit: Arc<crate::audit::Audit>,
    /// `--max_num_load_retries` and `--load_retry_interval_micros`.
    pub retries: LoadRetries,
    /// Counts each load, as TensorFlow's SavedModel loads are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `--enable_batching` with `--batching_parameters_file`: each version batches its Predicts.
    pub batching: Option<crate::batching::BatchingParameters>,
    /// `--enable_per_model_batching_parameters`: each version's own `batching_params.pbtxt`.
    pub per_model_batching: bool,
    /// The most bytes one batch's inputs may hold (what one request may).
    pub max_batch_bytes: usize,
    /// Replays each version's warmup requests before it serves (`--enable_model_warmup`).
    pub warmup: Option<crate::warmup::Warmup>,
    /// `--allow_version_labels_for_unavailable_models`: a label not yet assigned may name a version
    /// not yet served.
    pub labels_for_unavailable: bool,
    /// `--num_load_threads` and `--num_unload_threads`: at most this many version loads, and
    /// shutdowns, at once; `None`: no bound.
    pub load_threads: Option<Arc<tokio::sync::Semaphore>>,
    pub unload_threads: Option<Arc<tokio::sync::Semaphore>>,
    /// Set when the server stops: a load waiting to retry gives up at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// How often a failed load is tried again, and how long it waits in between (TensorFlow
/// Serving's defaults: 5 times, a minute apart). Only failures another try could change are
/// retried: the sandbox not starting, its worker dying or timing out. A model TensorFlow refuses,
/// or a folder refused here, fails the same way every time and is not retried.
#[derive(Debug, Clone, Copy)]
pub struct LoadRetries {
    pub max: u32,
    pub interval: Duration,
}

impl Default for LoadRetries {
    fn default() -> Self {
        LoadRetries {
            max: 5,
            interval: Duration::from_secs(60),
        }
    }
}

/// Whether another try could load what failed with `error`.
fn worth_retrying(error: &Error) -> bool {
    matches!(
        error,
        Error::Spawn { .. }
            | Error::Transport { .. }
            | Error::WorkerExited { .. }
            | Error::DeadlineExceeded { .. }
            | Error::Closed { .. }
            | Error::Engine { .. }
            | Error::NoFreeUid(_)
    )
}

impl ServedModel {
    /// The model of `config`, with no labels yet: they are set once the versions they name
    /// are served ([`ServedModel::set_labels`]).
    pub fn new(config: ModelConfig) -> ServedModel {
        ServedModel {
            name: config.name,
            base_path: config.base_path,
            policy: RwLock::new(config.policy),
            labels: RwLock::new(BTreeMap::new()),
            state: RwLock::new(ModelState::default()),
        }
    }

    /// The labels assigned now.
    pub fn labels(&self) -> BTreeMap<String, i64> {
        self.labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The version `label` names.
    pub fn label(&self, label: &str) -> Option<i64> {
        let labels = self.labels.read().unwrap_or_else(|e| e.into_inner());
        labels.get(label).copied()
    }

    pub fn set_labels(&self, labels: BTreeMap<String, i64>) {
        *self.labels.write().unwrap_or_else(|e| e.into_inner()) = labels;
    }

    /// Which versions to serve from the next [`ServedModel::sync`] on.
    pub fn set_policy(&self, policy: VersionPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    /// The version a call goes to: the one asked for, or the highest one ready.
    pub fn get(&self, version: Option<i64>) -> Option<Arc<Version>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match version {
            Some(v) => state.ready.get(&v).cloned(),
            None => state.ready.values().next_back().cloned(),
        }
    }

    /// The versions serving, lowest first.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.ready.values().cloned().collect()
    }

    /// Every version known, with its state, lowest first.
    pub fn statuses(&self) -> Vec<(i64, VersionStatus)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.status.iter().map(|(v, s)| (*v, s.clone())).collect()
    }

    fn set_status(&self, version: i64, state: State, error: Option<(tonic::Code, String)>) {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        guard.status.insert(version, VersionStatus { state, error });
    }

    /// Brings the served versions in line with the folders under the base path: loads the
    /// versions the policy wants that are not loaded yet, then retires the ones it no longer wants.
    pub async fn sync(self: &Arc<Self>, settings: &LoadSettings) {
        let mut found = match scan(&self.base_path) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(model = %self.name, "cannot read {}: {error}", self.base_path.display());
                return;
            }
        };
        let (ready, known): (BTreeSet<i64>, BTreeSet<i64>) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            (
                state.ready.keys().copied().collect(),
                state.status.keys().copied().collect(),
            )
        };
        // A refused folder shows as END with its reason, and the policy picks among the rest.
        if !settings.follow_symlinks {
            found.retain(|&number, dir| {
                let Some(refused) = refuse_symlink(dir) else {
                    return true;
                };
                if !known.contains(&number) {
                    tracing::error!(model = %self.name, version = number, "{refused}");
                    self.refused(settings, number, dir, "symlink", &refused);
                    self.set_status(
                        number,
                        State::End,
                        Some((tonic::Code::PermissionDenied, refused)),
                    );
                }
                false
            });
        }
        let aspired = {
            let policy = self.policy.read().unwrap_or_else(|e| e.into_inner());
            policy.aspired(&found.keys().copied().collect())
        };
        // Versions seen before (a failed load, a retired version) are not tried again: a
        // broken version would otherwise be restarted on every poll.
        for &number in aspired.difference(&known) {
            let dir = &found[&number];
            let memory = match &settings.budget {
                Some(budget) => {
                    let bytes = (settings.sandboxes as u64)
                        .saturating_mul(settings.config.sandbox_memory_bytes());
                    match budget.reserve(bytes) {
                        Ok(reservation) => Some(reservation),
                        Err(why) => {
                            tracing::error!(model = %self.name, version = number, "{why}");
                            self.refused(settings, number, dir, "budget", &why);
                            let code = tonic::Code::ResourceExhausted;
                            self.set_status(number, State::End, Some((code, why)));
                            continue;
                        }
                    }
                }
                None => None,
            };
            self.set_status(number, State::Loading, None);
            tracing::info!(model = %self.name, version = number, "loading {}", dir.display());
            let permit = match &settings.load_threads {
                Some(threads) => threads.clone().acquire_owned().await.ok(),
                None => None,
            };
            let loaded = match load(&self.name, dir, settings).await {
                Ok(pool) => self.warm_up(settings, number, dir, pool, memory).await,
                Err(error) => {
                    let code = error
                        .status()
                        .map(|s| s.code())
                        .unwrap_or(tonic::Code::Unknown);
                    Err(("load_error", code, error.to_string()))
                }
            };
            drop(permit);
            settings
                .metrics
                .load(&dir.display().to_string(), loaded.is_ok());
            match loaded {
                Ok(version) => {
                    let pool = &version.pool;
                    let digest = pool.digest();
                    settings.audit.record(
                        "version_loaded",
                        serde_json::json!({
                            "model": self.name,
                            "version": number,
                            "path": dir.display().to_string(),
                            "digest": digest.sha256,
                            "files": digest.files,
                            "bytes": digest.bytes,
                            "not_files": digest.not_files,
                            "capabilities": pool
                                .capabilities()
                                .map(|all| all.iter().map(|c| c.name()).collect::<Vec<_>>()),
                            "sandboxes": pool.size(),
                        }),
                    );
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    state.ready.insert(number, version);
                    state.status.insert(
                        number,
                        VersionStatus {
                            state: State::Available,
                            error: None,
                        },
                    );
                    tracing::info!(model = %self.name, version = number, "available");
                }
                Err((reason, code, message)) => {
                    tracing::error!(model = %self.name, version = number, "loading failed: {message}");
                    self.refused(settings, number, dir, reason, &message);
                    self.set_status(number, State::End, Some((code, message)));
                }
            }
        }
        let retire: Vec<Arc<Version>> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let unwanted: Vec<i64> = ready
                .iter()
                .copied()
                .filter(|v| !aspired.contains(v))
                .collect();
            // Availability first: while no wanted version could be loaded, the old ones stay.
            let wanted_ready = state.ready.keys().any(|v| aspired.contains(v));
            if !wanted_ready {
                Vec::new()
            } else {
                unwanted
                    .into_iter()
                    .filter_map(|v| {
                        state.status.insert(
                            v,
                            VersionStatus {
                                state: State::Unloading,
                                error: None,
                            },
                        );
                        state.ready.remove(&v)
                    })
                    .collect()
            }
        };
        for version in retire {
            let model = self.clone();
            let drain = settings.drain_timeout;
            let threads = settings.unload_threads.clone();
            tokio::spawn(async move {
                let number = version.number;
                tracing::info!(model = %model.name, version = number, "retiring");
                let _permit = match threads {
                    Some(threads) => threads.acquire_owned().await.ok(),
                    None => None,
                };
                retire_version(version, drain).await;
                model.set_status(number, State::End, None);
                tracing::info!(model = %model.name, version = number, "retired");
            });
        }
    }

    /// `pool`, loaded from `dir`, as a version, once its warmup requests (if any) have run; a
    /// failed warmup fails the load, as in TensorFlow Serving, and the pool is shut down.
    async fn warm_up(
        &self,
        settings: &LoadSettings,
        number: i64,
        dir: &Path,
        pool: Pool,
        memory: Option<Reservation>,
    ) -> Result<Arc<Version>, (&'static str, tonic::Code, String)> {
        let parameters = match batching_of(settings, dir) {
            Ok(parameters) => parameters,
            Err(message) => {
                pool.shutdown().await;
                return Err(("batching", tonic::Code::InvalidArgument, message));
            }
        };
        let version = Arc::new(Version {
            number,
            pool,
            batcher: parameters.map(|parameters| {
                crate::batching::Batcher::new(parameters, settings.max_batch_bytes)
            }),
            _memory: memory,
        });
        if let Some(warmup) = &settings.warmup {
            match warmup.run(&version, dir).await {
                Ok(0) => {}
                Ok(run) => {
                    tracing::info!(model = %self.name, version = number, "warmed up with {run} requests");
                }
                Err(error) => {
                    retire_version(version, settings.drain_timeout).await;
                    return Err(("warmup", error.code(), error.to_string()));
                }
            }
        }
        Ok(version)
    }

    /// A version not served, in the audit log: `reason` is `symlink`, `budget`, `load_error` or
    /// `warmup`.
    fn refused(
        &self,
        settings: &LoadSettings,
        version: i64,
        dir: &Path,
        reason: &str,
        message: &str,
    ) {
        settings.audit.record(
            "version_refused",
            serde_json::json!({
                "model": self.name,
                "version": version,
                "path": dir.display().to_string(),
                "reason": reason,
                "message": message,
            }),
        );
    }

    /// Stops every version (the server is going away).
    pub async fn stop(&self, drain: Duration) {
        let versions: Vec<Arc<Version>> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut state.ready).into_values().collect()
        };
        futures::future::join_all(versions.into_iter().map(|v| retire_version(v, drain))).await;
    }
}

/// Waits until no call holds the version any more (calls take their own handle before they
/// start), then shuts its pool down; past `drain`, it is dropped, which kills its workers.
async fn retire_version(version: Arc<Version>, drain: Duration) {
    let start = Instant::now();
    let mut version = version;
    loop {
        match Arc::try_unwrap(version) {
            Ok(version) => {
                version.pool.shutdown().await;
                return;
            }
            Err(still_held) if start.elapsed() < drain => {
                version = still_held;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::warn!("a retired version still had calls after {drain:?}; stopping it");
                return;
            }
        }
    }
}

/// Where a version keeps its own batching parameters (`--enable_per_model_batching_parameters`).
const PER_MODEL_BATCHING_FILE: &str = "batching_params.pbtxt";

/// How the version in `dir` batches: as `--batching_parameters_file` says, or with
/// `--enable_per_model_batching_parameters` as its own `batching_params.pbtxt` says (a version
/// without one is not batched, as in TensorFlow Serving). The file is the model author's: read
/// as [`crate::model_files`] reads such files, at most 64 KiB.
fn batching_of(
    settings: &LoadSettings,
    dir: &Path,
) -> Result<Option<crate::batching::BatchingParameters>, String> {
    if settings.batching.is_none() || !settings.per_model_batching {
        return Ok(settings.batching);
    }
    let path = dir.join(PER_MODEL_BATCHING_FILE);
    match crate::model_files::read_text(dir, PER_MODEL_BATCHING_FILE, 64 << 10) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => crate::model_config::batching_parameters(&text)
            .map(Some)
            .map_err(|e| {
                format!(
                    "Error parsing text-format tensorflow.serving.BatchingParameters in {}: {e}",
                    path.display()
                )
            }),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Starts a version's pool, trying again as `settings.retries` says.
async fn load(name: &str, dir: &Path, settings: &LoadSettings) -> Result<Pool, Error> {
    let config = settings.config.clone().with_model(dir);
    let options = LoadOptions {
        id: Some(name.to_string()),
        tags: settings.tags.clone(),
    };
    let mut tries = 0;
    loop {
        let error = match Pool::start_with(config.clone(), dir, settings.sandboxes, options.clone())
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(error) => error,
        };
        if tries >= settings.retries.max || !worth_retrying(&error) {
            return Err(error);
        }
        tries += 1;
        tracing::warn!(
            model = name,
            "loading {} failed: {error}; retry {tries} of {} in {:?}",
            dir.display(),
            settings.retries.max,
            settings.retries.interval
        );
        let mut stopping = settings.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(settings.retries.interval) => {}
            _ = stopping.wait_for(|stop| *stop) => return Err(error),
        }
    }
}

/// Why a version folder is refused: it is a symlink (naming where it points), so mounting it
/// would mount another host folder.
fn refuse_symlink(dir: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(dir).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = std::fs::read_link(dir)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    Some(format!(
        "version folder {} is a symlink (to {target}); refused, as its target would be mounted into the sandbox (--follow_version_symlinks allows it)",
        dir.display()
    ))
}

/// Version folders under `base`: named by a non-negative number and holding a SavedModel.
pub fn scan(base: &Path) -> std::io::Result<BTreeMap<i64, PathBuf>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(base)? {
        let path = entry?.path();
        let Some(number) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
        else {
            continue;
        };
        if path.join("saved_model.pb").is_file() || path.join("saved_model.pbtxt").is_file() {
            found.insert(number, path);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_would_pass_it_and_takes_back_what_goes() {
        let budget = MemoryBudget::new(1000);
        let first = budget.reserve(600).expect("fits");
        let refused = budget.reserve(600).expect_err("600 of 400 left");
        assert!(
            refused.contains("only 400 of --max_total_memory 1000"),
            "{refused}"
        );
        let second = budget.reserve(400).expect("exactly what is left");
        drop(first);
        let third = budget.reserve(600).expect("the first one's share is back");
        drop((second, third));
        assert_eq!(*budget.promised.lock().unwrap(), 0);
    }

    #[test]
    fn policies_pick_versions() {
        let found: BTreeSet<i64> = [1, 2, 10].into();
        assert_eq!(VersionPolicy::default().aspired(&found), [10].into());
        assert_eq!(VersionPolicy::Latest(2).aspired(&found), [2, 10].into());
        assert_eq!(VersionPolicy::All.aspired(&found), found);
        assert_eq!(
            VersionPolicy::Specific([1, 3].into()).aspired(&found),
            [1].into()
        );
    }

    #[test]
    fn scan_finds_numbered_saved_models_only() {
        let base = tempfile::tempdir().unwrap();
        for dir in ["1", "7", "x", "-3", "8"] {
            std::fs::create_dir(base.path().join(dir)).unwrap();
        }
        for dir in ["1", "7", "x", "-3"] {
            std::fs::write(base.path().join(dir).join("saved_model.pb"), b"").unwrap();
        }
        let found = scan(base.path()).unwrap();
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![1, 7]);
    }

    #[test]
    fn a_symlinked_version_folder_is_refused_naming_it() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("saved_model.pb"), b"").unwrap();
        std::fs::create_dir(base.path().join("1")).unwrap();
        let link = base.path().join("2");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        assert_eq!(refuse_symlink(&base.path().join("1")), None);
        let refused = refuse_symlink(&link).expect("a symlink is refused");
        assert!(refused.contains(&link.display().to_string()), "{refused}");
        assert!(
            refused.contains(&elsewhere.path().display().to_string()),
            "{refused}"
        );
    }
}
