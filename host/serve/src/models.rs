//! The set of served models, and how a new config replaces it: at start, on
//! `ModelService/HandleReloadConfigRequest`, and when `--model_config_file_poll_wait_seconds`
//! finds the config file changed.
//!
//! As in TensorFlow Serving, the new config supersedes the old one: a model it leaves out is
//! unloaded, a new one is loaded, and one whose version policy or labels changed keeps the
//! versions both configs want. A model whose base path changed is loaded afresh beside the old
//! one, which keeps serving until the new one has a version ready.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::versions::{LoadSettings, ModelConfig, ServedModel};

/// Why a config could not be put in place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("no version of model '{model}' could be loaded from {} (versions are numbered folders, e.g. {}/1/saved_model.pb)", .base.display(), .base.display())]
    NothingLoaded { model: String, base: PathBuf },
    #[error("Request to assign label to version {version} of model {model}, which is not currently available for inference (label '{label}')")]
    Label {
        label: String,
        version: i64,
        model: String,
    },
}

impl ConfigError {
    /// TensorFlow Serving's code for it.
    pub fn code(&self) -> tonic::Code {
        match self {
            ConfigError::NothingLoaded { .. } => tonic::Code::NotFound,
            ConfigError::Label { .. } => tonic::Code::FailedPrecondition,
        }
    }
}

pub struct Models {
    current: RwLock<Arc<BTreeMap<String, Arc<ServedModel>>>>,
    settings: LoadSettings,
    /// One change at a time: a reload, or a scan of the base paths for new versions (two syncs
    /// of one model at once could load a version twice).
    changing: tokio::sync::Mutex<()>,
    /// Models a reload took out, still finishing their calls.
    retiring: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Tells loads waiting to retry that the server is stopping (`settings.stopping`).
    stop_loads: tokio::sync::watch::Sender<bool>,
}

impl Models {
    pub fn new(settings: LoadSettings, stop_loads: tokio::sync::watch::Sender<bool>) -> Models {
        Models {
            stop_loads,
            current: RwLock::new(Arc::new(BTreeMap::new())),
            settings,
            changing: tokio::sync::Mutex::new(()),
            retiring: Mutex::new(Vec::new()),
        }
    }

    /// The metrics its loads are counted in.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.settings.metrics.clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.all().get(name).cloned()
    }

    /// The models served now.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<ServedModel>>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts `configs` in place of the models served now, once the versions they want are loaded.
    /// On an error the models that did load are still served, as in TensorFlow Serving, and the
    /// error names the first model that failed; a model whose new base path loaded nothing keeps
    /// its old versions, and labels that name a version not served are not applied.
    pub async fn apply(&self, configs: Vec<ModelConfig>) -> Result<(), ConfigError> {
        let _changing = self.changing.lock().await;
        let old = self.all();
        let mut next = BTreeMap::new();
        let mut synced = Vec::new();
        for config in configs {
            let model = match old.get(&config.name) {
                Some(model) if model.base_path == config.base_path => {
                    model.set_policy(config.policy.clone());
                    model.clone()
                }
                _ => Arc::new(ServedModel::new(config.clone())),
            };
            synced.push((model.clone(), config));
            next.insert(model.name.clone(), model);
        }
        futures::future::join_all(synced.iter().map(|(m, _)| m.sync(&self.settings))).await;

        let mut first_error = None;
        for (model, config) in &synced {
            if model.get(None).is_none() {
                first_error.get_or_insert(ConfigError::NothingLoaded {
                    model: model.name.clone(),
                    base: model.base_path.clone(),
                });
                if let Some(before) = old.get(&model.name) {
                    next.insert(model.name.clone(), before.clone());
                }
                continue;
            }
            // As in TensorFlow Serving, a label may only name a version that is being served;
            // with --allow_version_labels_for_unavailable_models, a label not assigned yet may
            // name one still to come.
            let assigned = model.labels();
            match config.labels.iter().find(|(label, &version)| {
                let may_wait =
                    self.settings.labels_for_unavailable && !assigned.contains_key(*label);
                !may_wait && model.get(Some(version)).is_none()
            }) {
                Some((label, &version)) => {
                    first_error.get_or_insert(ConfigError::Label {
                        label: label.clone(),
                        version,
                        model: model.name.clone(),
                    });
                }
                None => model.set_labels(config.labels.clone()),
            }
        }

        let gone: Vec<Arc<ServedModel>> = old
            .iter()
            .filter(|(name, model)| !next.get(*name).is_some_and(|m| Arc::ptr_eq(m, model)))
            .map(|(_, model)| model.clone())
            .collect();
        // A fresh model that loaded nothing is not kept.
        let unused: Vec<Arc<ServedModel>> = synced
            .iter()
            .map(|(m, _)| m.clone())
            .filter(|m| !next.get(&m.name).is_some_and(|n| Arc::ptr_eq(n, m)))
            .collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        let drain = self.settings.drain_timeout;
        let mut retiring = self.retiring.lock().unwrap_or_else(|e| e.into_inner());
        retiring.retain(|task| !task.is_finished());
        for model in gone.into_iter().chain(unused) {
            tracing::info!(model = %model.name, "unloading: not in the new config");
            retiring.push(tokio::spawn(async move { model.stop(drain).await }));
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Loads the new versions found under every base path and retires the ones no longer wanted.
    pub async fn sync(&self) {
        let _changing = self.changing.lock().await;
        let models = self.all();
        for model in models.values() {
            model.sync(&self.settings).await;
        }
    }

    /// Stops every model, after the calls in flight (the server is going away).
    pub async fn stop(&self) {
        let _ = self.stop_loads.send(true);
        let _changing = self.changing.lock().await;
        let models = std::mem::take(&mut *self.current.write().unwrap_or_else(|e| e.into_inner()));
        let drain = self.settings.drain_timeout;
        futures::future::join_all(models.values().map(|m| m.stop(drain))).await;
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|e| e.into_inner()));
        futures::future::join_all(retiring).await;
    }
}
