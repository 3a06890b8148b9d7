//! TensorFlow Serving's model config file (`--model_config_file`): a text-format
//! `ModelServerConfig` holding a `model_config_list`. The fields read are `name`, `base_path`,
//! `model_platform` (only "tensorflow"), `model_version_policy` (`latest { num_versions }`,
//! `all {}`, `specific { versions }`) and `version_labels`; any other field is refused, so a config that asks for
//! something not done here fails loudly instead of being half-followed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::versions::{ModelConfig, VersionPolicy};
use crate::proto::serving as pb;
use crate::text_format::{self, Value};

/// Worded as TensorFlow Serving's (protobuf's) parser words it, which its tests look for.
#[derive(Debug, thiserror::Error)]
#[error("Error parsing text-format tensorflow.serving.ModelServerConfig: {0}")]
pub struct ConfigFileError(String);

fn error<T>(message: impl Into<String>) -> Result<T, ConfigFileError> {
    Err(ConfigFileError(message.into()))
}

/// The fields of a text-format message whose fields are all scalars (an `SSLConfig`), in order.
pub(crate) fn flat_fields(text: &str) -> Result<Vec<(String, String)>, String> {
    text_format::parse(text)?
        .into_iter()
        .map(|(name, value)| match value {
            Value::Scalar(s) => Ok((name, s)),
            Value::Message(_) => Err(format!("field '{name}' is not a scalar")),
        })
        .collect()
}

/// TensorFlow Serving's `MonitoringConfig` (`--monitoring_config_file`): the path Prometheus
/// counters are served on, `None` when `prometheus_config` is absent or not enabled. An empty
/// path is TensorFlow Serving's default, `/monitoring/prometheus/metrics`.
pub fn monitoring_config(text: &str) -> Result<Option<String>, ConfigFileError> {
    let mut path = None;
    for (name, value) in text_format::parse(text).map_err(ConfigFileError)? {
        let fields = match (name.as_str(), value) {
            ("prometheus_config", Value::Message(fields)) => fields,
            (other, _) => return error(format!("unknown field '{other}'")),
        };
        let mut enable = false;
        let mut given = String::new();
        for (name, value) in fields {
            match (name.as_str(), value) {
                ("enable", Value::Scalar(v)) => {
                    enable = match text_format::boolean(&v) {
                        Some(enable) => enable,
                        None => return error(format!("enable: '{v}' is not a bool")),
                    }
                }
                ("path", Value::Scalar(v)) => given = v,
                (other, _) => return error(format!("prometheus_config: unknown field '{other}'")),
            }
        }
        if given.is_empty() {
            given = "/monitoring/prometheus/metrics".into();
        }
        if !given.starts_with('/') {
            return error(format!(
                "prometheus_config: path '{given}' does not start with '/'"
            ));
        }
        path = enable.then_some(given);
    }
    Ok(path)
}

/// TensorFlow Serving's `BatchingParameters` (`--batching_parameters_file`): `max_batch_size`,
/// `batch_timeout_micros`, `max_enqueued_batches` and `num_batch_threads`, each a wrapped
/// `{ value: N }`; any other field (padding, allowed batch sizes, splitting) is refused by name.
pub fn batching_parameters(text: &str) -> Result<crate::batching::BatchingParameters, String> {
    batching_fields(text_format::parse(text)?)
}

/// [`batching_parameters`] of an already parsed message (a platform config's).
pub(crate) fn batching_fields(
    fields: Vec<(String, Value)>,
) -> Result<crate::batching::BatchingParameters, String> {
    let mut parameters = crate::batching::BatchingParameters::default();
    for (name, value) in fields {
        let Some(v) = text_format::wrapped(&value) else {
            return Err(format!("{name}: expected {{ value: N }}"));
        };
        let number = v
            .parse::<u64>()
            .map_err(|_| format!("{name}: '{v}' is not a whole number"))?;
        match name.as_str() {
            "max_batch_size" => parameters.max_batch_size = number.max(1) as usize,
            "batch_timeout_micros" => {
                parameters.batch_timeout = std::time::Duration::from_micros(number)
            }
            "max_enqueued_batches" => parameters.max_enqueued_batches = number.max(1) as usize,
            "num_batch_threads" => parameters.num_batch_threads = number.max(1) as usize,
            other => return Err(format!("'{other}' is not supported by tfsandbox serve")),
        }
    }
    Ok(parameters)
}

/// The models a config file lists.
pub fn parse(text: &str) -> Result<Vec<ModelConfig>, ConfigFileError> {
    let top = text_format::parse(text).map_err(ConfigFileError)?;
    let mut models = Vec::new();
    for (name, value) in top {
        match (name.as_str(), value) {
            ("model_config_list", Value::Message(list)) => {
                for (name, value) in list {
                    match (name.as_str(), value) {
                        ("config", Value::Message(fields)) => models.push(model(fields)?),
                        (other, _) => {
                            return error(format!("model_config_list: unknown field '{other}'"))
                        }
                    }
                }
            }
            ("custom_model_config", _) => return error("custom_model_config is not supported"),
            (other, _) => return error(format!("unknown field '{other}'")),
        }
    }
    distinct(&models).map_err(ConfigFileError)?;
    if models.is_empty() {
        return error(
            "no model listed (model_config_list { config { name: ... base_path: ... } })",
        );
    }
    Ok(models)
}

fn distinct(models: &[ModelConfig]) -> Result<(), String> {
    let mut names = BTreeSet::new();
    match models.iter().find(|m| !names.insert(m.name.as_str())) {
        Some(m) => Err(format!("model '{}' is listed twice", m.name)),
        None => Ok(()),
    }
}

/// The models of a `ModelConfigList` as `HandleReloadConfigRequest` carries it, held to the same
/// rules as the file's; an empty list unloads every model, as in TensorFlow Serving.
pub fn from_proto(list: pb::ModelConfigList) -> Result<Vec<ModelConfig>, String> {
    let models = list
        .config
        .into_iter()
        .map(|config| {
            let name = config.name;
            if name.is_empty() {
                return Err("a config has no name".to_string());
            }
            if config.base_path.is_empty() {
                return Err(format!("model '{name}' has no base_path"));
            }
            if !matches!(config.model_platform.as_str(), "" | "tensorflow") {
                return Err(format!(
                    "model '{name}': model_platform '{}' is not supported (only 'tensorflow')",
                    config.model_platform
                ));
            }
            if !matches!(config.model_type, 0 | 1) {
                return Err(format!(
                    "model '{name}': model_type {} is not supported (only TENSORFLOW)",
                    config.model_type
                ));
            }
            if !config.logging_config.is_empty() {
                return Err(format!("model '{name}': logging_config is not supported"));
            }
            use pb::file_system_storage_path_source_config::servable_version_policy::PolicyChoice;
            let policy = match config.model_version_policy.and_then(|p| p.policy_choice) {
                None => VersionPolicy::default(),
                Some(PolicyChoice::Latest(latest)) => {
                    VersionPolicy::Latest((latest.num_versions as usize).max(1))
                }
                Some(PolicyChoice::All(_)) => VersionPolicy::All,
                Some(PolicyChoice::Specific(specific)) => {
                    VersionPolicy::Specific(specific.versions.into_iter().collect())
                }
            };
            if let Some((label, _)) = config.version_labels.iter().find(|(l, _)| l.is_empty()) {
                return Err(format!("model '{name}': version label '{label}' is empty"));
            }
            Ok(ModelConfig {
                name,
                base_path: PathBuf::from(config.base_path),
                policy,
                labels: config.version_labels.into_iter().collect(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    distinct(&models)?;
    Ok(models)
}

fn model(fields: Vec<(String, Value)>) -> Result<ModelConfig, ConfigFileError> {
    let mut name = None;
    let mut base_path = None;
    let mut policy = VersionPolicy::default();
    let mut labels = BTreeMap::new();
    for (field, value) in fields {
        match (field.as_str(), value) {
            ("name", Value::Scalar(s)) => name = Some(s),
            ("base_path", Value::Scalar(s)) => base_path = Some(PathBuf::from(s)),
            ("model_platform", Value::Scalar(s)) if s == "tensorflow" => {}
            ("model_platform", Value::Scalar(s)) => {
                return error(format!(
                    "model_platform '{s}' is not supported (only 'tensorflow')"
                ))
            }
            ("model_version_policy", Value::Message(p)) => policy = version_policy(p)?,
            ("version_labels", Value::Message(entry)) => {
                let (label, version) = label_entry(entry)?;
                labels.insert(label, version);
            }
            (other, _) => return error(format!("config: unsupported field '{other}'")),
        }
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return error("a config has no name");
    };
    let Some(base_path) = base_path else {
        return error(format!("model '{name}' has no base_path"));
    };
    Ok(ModelConfig {
        name,
        base_path,
        policy,
        labels,
    })
}

/// One `version_labels { key: 'stable' value: 3 }` map entry.
fn label_entry(fields: Vec<(String, Value)>) -> Result<(String, i64), ConfigFileError> {
    let (mut key, mut value) = (None, None);
    for (field, v) in fields {
        match (field.as_str(), v) {
            ("key", Value::Scalar(s)) => key = Some(s),
            ("value", Value::Scalar(s)) => {
                value = Some(s.parse::<i64>().map_err(|_| {
                    ConfigFileError(format!("version_labels: '{s}' is not a version number"))
                })?)
            }
            (other, _) => return error(format!("version_labels: unknown field '{other}'")),
        }
    }
    match (key.filter(|k| !k.is_empty()), value) {
        (Some(key), Some(value)) => Ok((key, value)),
        _ => error("version_labels needs a key and a value"),
    }
}

fn version_policy(fields: Vec<(String, Value)>) -> Result<VersionPolicy, ConfigFileError> {
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| ConfigFileError(format!("model_version_policy: '{s}' is not a number")))
    };
    match fields.into_iter().next() {
        Some((kind, Value::Message(inner))) => match kind.as_str() {
            "all" => Ok(VersionPolicy::All),
            "latest" => {
                let mut n = 1;
                for (field, value) in inner {
                    match (field.as_str(), value) {
                        ("num_versions", Value::Scalar(s)) => n = number(&s)?.max(1) as usize,
                        (other, _) => return error(format!("latest: unknown field '{other}'")),
                    }
                }
                Ok(VersionPolicy::Latest(n))
            }
            "specific" => {
                let mut versions = BTreeSet::new();
                for (field, value) in inner {
                    match (field.as_str(), value) {
                        ("versions", Value::Scalar(s)) => {
                            versions.insert(number(&s)?);
                        }
                        (other, _) => return error(format!("specific: unknown field '{other}'")),
                    }
                }
                Ok(VersionPolicy::Specific(versions))
            }
            other => error(format!("model_version_policy: unknown policy '{other}'")),
        },
        _ => error("model_version_policy needs one of latest {}, all {}, specific {}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tensorflow_servings_format() {
        let text = r#"
            # Two models.
            model_config_list {
              config {
                name: 'half'
                base_path: "/models/half"
                model_platform: "tensorflow"
              }
              config: {
                name: "mlp", base_path: "/models/mlp",
                model_version_policy: { specific { versions: 1 versions: 3 } }
              }
              config { name: "all" base_path: "/m/all" model_version_policy { all {} } }
              config { name: "two" base_path: "/m/two" model_version_policy { latest { num_versions: 2 } } }
            }
        "#;
        let models = parse(text).unwrap();
        assert_eq!(models.len(), 4);
        assert_eq!(models[0].name, "half");
        assert_eq!(models[0].base_path, PathBuf::from("/models/half"));
        assert_eq!(models[0].policy, VersionPolicy::Latest(1));
        assert_eq!(models[1].policy, VersionPolicy::Specific([1, 3].into()));
        assert_eq!(models[2].policy, VersionPolicy::All);
        assert_eq!(models[3].policy, VersionPolicy::Latest(2));
    }

    #[test]
    fn monitoring_config_names_the_prometheus_path() {
        let on =
            "prometheus_config {\n  enable: true,\n  path: \"/monitoring/prometheus/metrics\"\n}\n";
        assert_eq!(
            monitoring_config(on).unwrap().as_deref(),
            Some("/monitoring/prometheus/metrics")
        );
        assert_eq!(
            monitoring_config("prometheus_config { enable: true }")
                .unwrap()
                .as_deref(),
            Some("/monitoring/prometheus/metrics")
        );
        assert_eq!(
            monitoring_config("prometheus_config { enable: false path: '/m' }").unwrap(),
            None
        );
        assert_eq!(monitoring_config("").unwrap(), None);
        assert!(monitoring_config("prometheus_config { enabled: true }").is_err());
        assert!(monitoring_config("prometheus_config { enable: true path: 'm' }").is_err());
    }

    #[test]
    fn batching_parameters_as_tensorflow_serving_writes_them() {
        let p = batching_parameters(
            "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 500 }\nmax_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n",
        )
        .unwrap();
        assert_eq!(p.max_batch_size, 128);
        assert_eq!(p.batch_timeout, std::time::Duration::from_micros(500));
        assert_eq!(
            (p.max_enqueued_batches, p.num_batch_threads),
            (1_000_000, 8)
        );
        let refused = batching_parameters("pad_variable_length_inputs: true").unwrap_err();
        assert!(refused.contains("pad_variable_length_inputs"), "{refused}");
    }

    #[test]
    fn version_labels() {
        let models = parse("model_config_list { config { name: 'a' base_path: '/a' version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } } }").unwrap();
        let labels: Vec<(&str, i64)> = models[0]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(labels, [("canary", 2), ("stable", 1)]);
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        assert!(parse("model_config_list { config { name: 'a' } }").is_err());
        assert!(parse(
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }"
        )
        .is_err());
        assert!(parse(
            "model_config_list { config { name: 'a' base_path: '/a' logging_config { } } }"
        )
        .is_err());
        assert!(parse("model_config_list { config { name: 'a' base_path: '/a' version_labels { key: 'x' value: 'one' } } }").is_err());
        assert!(parse("model_config_list { config { name: 'a' base_path: '/a' version_labels { value: 1 } } }").is_err());
        assert!(parse("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }").is_err());
        assert!(parse("model_config_list { config { name: 'a'").is_err());
        assert!(parse("").is_err());
    }
}
