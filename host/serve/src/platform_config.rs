//! TensorFlow Serving's `--platform_config_file`: a text-format `PlatformConfigMap` whose
//! `tensorflow` platform holds a `SavedModelBundleSourceAdapterConfig`, whose `legacy_config`
//! (a `SessionBundleConfig`) then takes the place of the flags that set the same things
//! (session options, batching, tags, warmup, mixed precision), as in TensorFlow Serving's
//! `server.cc`. Its fields that mean something here are taken; any other is refused by name.

use crate::batching::BatchingParameters;
use crate::text_format::{self, Value};

/// Worded as protobuf's text parser words it.
#[derive(Debug, thiserror::Error)]
#[error("Error parsing text-format tensorflow.serving.PlatformConfigMap: {0}")]
pub struct PlatformConfigError(String);

const ADAPTER: &str =
    "[type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig]";

/// What a platform config's `legacy_config` asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlatformConfig {
    /// `session_config`, serialized, then what `mixed_precision` adds.
    pub config_proto: Vec<u8>,
    /// `batching_parameters`: batching is on when they are present.
    pub batching: Option<BatchingParameters>,
    pub per_model_batching: bool,
    /// `saved_model_tags`; empty: `serve`.
    pub tags: Vec<String>,
    /// How many times warmup replays each record, when `enable_model_warmup` is set (a proto
    /// bool, so off unless the file says so).
    pub warmup: Option<u32>,
}

/// Parses a platform config file's text.
pub fn parse(text: &str) -> Result<PlatformConfig, PlatformConfigError> {
    let bad = |message: String| PlatformConfigError(message);
    let mut config = None;
    for (name, value) in text_format::parse(text).map_err(bad)? {
        let Value::Message(entry) = value else {
            return Err(bad(format!("'{name}' is not a message")));
        };
        if name != "platform_configs" {
            return Err(bad(format!("unknown field '{name}'")));
        }
        let (mut key, mut platform) = (None, None);
        for (name, value) in entry {
            match (name.as_str(), value) {
                ("key", Value::Scalar(k)) => key = Some(k),
                ("value", Value::Message(fields)) => platform = Some(fields),
                (other, _) => {
                    return Err(bad(format!("platform_configs: unknown field '{other}'")))
                }
            }
        }
        match key.as_deref() {
            Some("tensorflow") => {}
            Some(other) => {
                return Err(bad(format!(
                    "platform '{other}' is not supported: the sandbox's worker serves the tensorflow platform only"
                )))
            }
            None => return Err(bad("platform_configs: an entry has no key".into())),
        }
        if config.is_some() {
            return Err(bad("platform 'tensorflow' is given twice".into()));
        }
        config = Some(tensorflow_platform(platform.unwrap_or_default())?);
    }
    config.ok_or_else(|| bad("no platform_configs entry for 'tensorflow'".into()))
}

fn tensorflow_platform(
    fields: Vec<(String, Value)>,
) -> Result<PlatformConfig, PlatformConfigError> {
    let bad = |message: String| Err(PlatformConfigError(message));
    let mut legacy = Vec::new();
    for (name, value) in fields {
        let Value::Message(adapter) = value else {
            return bad(format!("'{name}' is not a message"));
        };
        if name != "source_adapter_config" {
            return bad(format!("tensorflow: unknown field '{name}'"));
        }
        for (name, value) in adapter {
            let Value::Message(inner) = value else {
                return bad(format!("source_adapter_config: '{name}' is not a message"));
            };
            if name != ADAPTER {
                return bad(format!(
                    "source_adapter_config: '{name}' is not supported (only {ADAPTER})"
                ));
            }
            for (name, value) in inner {
                match (name.as_str(), value) {
                    ("legacy_config", Value::Message(fields)) => legacy.extend(fields),
                    (other, _) => {
                        return bad(format!(
                            "SavedModelBundleSourceAdapterConfig: unknown field '{other}'"
                        ))
                    }
                }
            }
        }
    }
    legacy_config(legacy)
}

/// A `SessionBundleConfig`.
fn legacy_config(fields: Vec<(String, Value)>) -> Result<PlatformConfig, PlatformConfigError> {
    let bad = |message: String| Err(PlatformConfigError(message));
    let mut config = PlatformConfig::default();
    let (mut warmup, mut iterations, mut mixed_precision) = (false, 1, String::new());
    for (name, value) in fields {
        let here = format!("legacy_config.{name}");
        match (name.as_str(), value) {
            ("session_config", Value::Message(fields)) => config.config_proto.extend(
                crate::session_config::encode_fields(fields)
                    .map_err(|e| PlatformConfigError(format!("{here}.{}", e.0)))?,
            ),
            ("batching_parameters", Value::Message(fields)) => {
                config.batching = Some(
                    crate::model_config::batching_fields(fields)
                        .map_err(|e| PlatformConfigError(format!("{here}: {e}")))?,
                )
            }
            ("saved_model_tags", Value::Scalar(tag)) => config.tags.push(tag),
            ("enable_model_warmup", Value::Scalar(v)) => warmup = boolean(&here, &v)?,
            ("enable_per_model_batching_params", Value::Scalar(v)) => {
                config.per_model_batching = boolean(&here, &v)?
            }
            ("mixed_precision", Value::Scalar(mode)) => mixed_precision = mode,
            ("model_warmup_options", Value::Message(options)) => {
                for (name, value) in options {
                    match (name.as_str(), value) {
                        ("num_request_iterations", value) => {
                            let what = format!("{here}.num_request_iterations");
                            let Some(v) = text_format::wrapped(&value) else {
                                return bad(format!("{what}: expected {{ value: N }}"));
                            };
                            iterations = v.parse::<i32>().map_err(|_| {
                                PlatformConfigError(format!("{what}: '{v}' is not a number"))
                            })?;
                        }
                        (other, _) => return bad(format!("{here}.{other}: not supported")),
                    }
                }
            }
            (other, _) => return bad(format!("legacy_config.{other}: not supported")),
        }
    }
    config
        .config_proto
        .extend(crate::session_config::mixed_precision(&mixed_precision));
    config.warmup = warmup.then_some(iterations.max(1) as u32);
    Ok(config)
}

fn boolean(here: &str, v: &str) -> Result<bool, PlatformConfigError> {
    text_format::boolean(v)
        .ok_or_else(|| PlatformConfigError(format!("{here}: '{v}' is not a bool")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_tensorflow_platforms_legacy_config() {
        let text = r#"
            platform_configs {
              key: "tensorflow"
              value {
                source_adapter_config {
                  [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
                    legacy_config {
                      session_config { intra_op_parallelism_threads: 3 }
                      batching_parameters { max_batch_size { value: 8 } batch_timeout_micros { value: 500 } }
                      saved_model_tags: "serve"
                      saved_model_tags: "gpu"
                      enable_model_warmup: true
                      model_warmup_options { num_request_iterations { value: 4 } }
                      mixed_precision: "bfloat16"
                    }
                  }
                }
              }
            }
        "#;
        let config = parse(text).unwrap();
        let mut expected = vec![0x10, 3];
        expected.extend([0x52, 5, 0x52, 3, 0xf8, 1, 1]);
        assert_eq!(config.config_proto, expected);
        let batching = config.batching.unwrap();
        assert_eq!(
            (batching.max_batch_size, batching.batch_timeout),
            (8, Duration::from_micros(500))
        );
        assert_eq!(config.tags, ["serve", "gpu"]);
        assert_eq!(config.warmup, Some(4));
        assert!(!config.per_model_batching);

        // A bare adapter config: no batching, and no warmup (a proto bool is off by default).
        let config = parse(
            "platform_configs { key: 'tensorflow' value { source_adapter_config { \
             [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] { \
             legacy_config { } } } } }",
        )
        .unwrap();
        assert_eq!(config, PlatformConfig::default());
    }

    #[test]
    fn what_is_not_done_here_is_refused_by_name() {
        let refused = |text: &str| parse(text).unwrap_err().to_string();
        let wrap = |legacy: &str| {
            format!(
                "platform_configs {{ key: 'tensorflow' value {{ source_adapter_config {{ {ADAPTER} {{ legacy_config {{ {legacy} }} }} }} }} }}"
            )
        };
        assert!(refused("platform_configs { key: 'tflite' value { } }")
            .contains("platform 'tflite' is not supported"));
        assert!(refused(&wrap("prefer_tflite_model: true"))
            .ends_with("legacy_config.prefer_tflite_model: not supported"));
        assert!(
            refused(&wrap("session_config { cluster_def { } }")).ends_with(
                "legacy_config.session_config.cluster_def: not a field tfsandbox serve supports"
            )
        );
        assert!(refused("").contains("no platform_configs entry for 'tensorflow'"));
        assert!(refused(
            "platform_configs { key: 'tensorflow' value { source_adapter_config { [type.googleapis.com/tensorflow.serving.SessionBundleSourceAdapterConfig] { } } } }"
        )
        .contains("is not supported (only"));
    }
}
