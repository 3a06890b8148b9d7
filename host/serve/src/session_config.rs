//! TensorFlow's session options as TensorFlow Serving takes them: a text-format
//! `tensorflow.ConfigProto` (`--tensorflow_session_config_file`) encoded to the wire format the
//! worker hands TensorFlow (`SessionConfig::config_proto`), and `--mixed_precision`.
//!
//! The encoder is hand-written from a table of the fields it knows, which is the part of
//! ConfigProto that means something to one sandboxed process (threads, placement, GPU memory,
//! graph optimizations). A field outside it, such as `cluster_def` or `rpc_options`, is refused
//! by name rather than dropped.

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::text_format::{self, Value};

/// Worded as protobuf's text parser words it, as TensorFlow Serving prints it.
#[derive(Debug, thiserror::Error)]
#[error("Error parsing text-format tensorflow.ConfigProto: {0}")]
pub struct SessionConfigError(pub(crate) String);

#[derive(Clone, Copy)]
enum Kind {
    Int32,
    Int64,
    Bool,
    Double,
    Text,
    Enum(&'static [(&'static str, i32)]),
    Message(&'static [Field]),
    /// `map<string, int32>`, written as repeated `{ key: ... value: ... }` entries.
    TextToInt32,
}

struct Field {
    name: &'static str,
    number: u32,
    kind: Kind,
}

const fn field(name: &'static str, number: u32, kind: Kind) -> Field {
    Field { name, number, kind }
}

const TOGGLE: Kind = Kind::Enum(&[
    ("DEFAULT", 0),
    ("ON", 1),
    ("OFF", 2),
    ("AGGRESSIVE", 3),
    ("EXPERIMENTAL_MLIR", 4),
    ("EXPERIMENTAL_BOTH", 5),
]);

const GPU_OPTIONS: &[Field] = &[
    field("per_process_gpu_memory_fraction", 1, Kind::Double),
    field("allocator_type", 2, Kind::Text),
    field("deferred_deletion_bytes", 3, Kind::Int64),
    field("allow_growth", 4, Kind::Bool),
    field("visible_device_list", 5, Kind::Text),
    field("polling_active_delay_usecs", 6, Kind::Int32),
    field("polling_inactive_delay_msecs", 7, Kind::Int32),
    field("force_gpu_compatible", 8, Kind::Bool),
];

const OPTIMIZER_OPTIONS: &[Field] = &[
    field("do_common_subexpression_elimination", 1, Kind::Bool),
    field("do_constant_folding", 2, Kind::Bool),
    field("opt_level", 3, Kind::Enum(&[("L1", 0), ("L0", -1)])),
    field("do_function_inlining", 4, Kind::Bool),
    field(
        "global_jit_level",
        5,
        Kind::Enum(&[("DEFAULT", 0), ("OFF", -1), ("ON_1", 1), ("ON_2", 2)]),
    ),
    field("max_folded_constant_in_bytes", 6, Kind::Int64),
    field("cpu_global_jit", 7, Kind::Bool),
];

const REWRITER_CONFIG: &[Field] = &[
    field("layout_optimizer", 1, TOGGLE),
    field("disable_model_pruning", 2, Kind::Bool),
    field("constant_folding", 3, TOGGLE),
    field("arithmetic_optimization", 7, TOGGLE),
    field("dependency_optimization", 8, TOGGLE),
    field("loop_optimization", 9, TOGGLE),
    field("function_optimization", 10, TOGGLE),
    field("debug_stripper", 11, TOGGLE),
    field(
        "meta_optimizer_iterations",
        12,
        Kind::Enum(&[("DEFAULT_NUM_ITERS", 0), ("ONE", 1), ("TWO", 2)]),
    ),
    field("shape_optimization", 13, TOGGLE),
    field("remapping", 14, TOGGLE),
    field("scoped_allocator_optimization", 15, TOGGLE),
    field("min_graph_nodes", 17, Kind::Int32),
    field("pin_to_host_optimization", 18, TOGGLE),
    field("disable_meta_optimizer", 19, Kind::Bool),
    field("implementation_selector", 22, TOGGLE),
    field("auto_mixed_precision", 23, TOGGLE),
    field("common_subgraph_elimination", 24, TOGGLE),
    field("auto_mixed_precision_mkl", 25, TOGGLE),
    field("auto_mixed_precision_cpu", 29, TOGGLE),
    field("auto_mixed_precision_onednn_bfloat16", 31, TOGGLE),
];

const GRAPH_OPTIONS: &[Field] = &[
    field("enable_recv_scheduling", 2, Kind::Bool),
    field("optimizer_options", 3, Kind::Message(OPTIMIZER_OPTIONS)),
    field("build_cost_model", 4, Kind::Int64),
    field("infer_shapes", 5, Kind::Bool),
    field("place_pruned_graph", 6, Kind::Bool),
    field("enable_bfloat16_sendrecv", 7, Kind::Bool),
    field("timeline_step", 8, Kind::Int32),
    field("build_cost_model_after", 9, Kind::Int64),
    field("rewrite_options", 10, Kind::Message(REWRITER_CONFIG)),
];

const CONFIG_PROTO: &[Field] = &[
    field("device_count", 1, Kind::TextToInt32),
    field("intra_op_parallelism_threads", 2, Kind::Int32),
    field("placement_period", 3, Kind::Int32),
    field("device_filters", 4, Kind::Text),
    field("inter_op_parallelism_threads", 5, Kind::Int32),
    field("gpu_options", 6, Kind::Message(GPU_OPTIONS)),
    field("allow_soft_placement", 7, Kind::Bool),
    field("log_device_placement", 8, Kind::Bool),
    field("use_per_session_threads", 9, Kind::Bool),
    field("graph_options", 10, Kind::Message(GRAPH_OPTIONS)),
    field("operation_timeout_in_ms", 11, Kind::Int64),
    field("isolate_session_state", 15, Kind::Bool),
];

/// A text-format `tensorflow.ConfigProto`, in the wire format.
pub fn encode(text: &str) -> Result<Vec<u8>, SessionConfigError> {
    encode_fields(text_format::parse(text).map_err(SessionConfigError)?)
}

/// [`encode`] of an already parsed message (a platform config's `session_config`).
pub(crate) fn encode_fields(fields: Vec<(String, Value)>) -> Result<Vec<u8>, SessionConfigError> {
    let mut out = Vec::new();
    encode_message("", CONFIG_PROTO, fields, &mut out)?;
    Ok(out)
}

/// What `--mixed_precision=MODE` (or a platform config's `mixed_precision`) adds, as
/// TensorFlow Serving's bundle factory does: for `bfloat16`, `graph_options { rewrite_options {
/// auto_mixed_precision_onednn_bfloat16: ON } }`; for no mode, nothing; for any other, nothing
/// and TensorFlow Serving's warning.
pub fn mixed_precision(mode: &str) -> Vec<u8> {
    match mode {
        "" => Vec::new(),
        "bfloat16" => {
            encode("graph_options { rewrite_options { auto_mixed_precision_onednn_bfloat16: ON } }")
                .expect("a fixed, known config")
        }
        _ => {
            // TensorFlow Serving's words, and like it, only a warning.
            tracing::warn!("{mode} auto mixed precision is not supported. Valid option: bfloat16");
            Vec::new()
        }
    }
}

fn encode_message(
    path: &str,
    schema: &[Field],
    fields: Vec<(String, Value)>,
    out: &mut Vec<u8>,
) -> Result<(), SessionConfigError> {
    let bad = |message: String| Err(SessionConfigError(message));
    for (name, value) in fields {
        let here = format!("{path}{name}");
        let Some(field) = schema.iter().find(|f| f.name == name) else {
            return bad(format!("{here}: not a field tfsandbox serve supports"));
        };
        match (field.kind, value) {
            (Kind::Message(inner), Value::Message(fields)) => {
                let mut nested = Vec::new();
                encode_message(&format!("{here}."), inner, fields, &mut nested)?;
                length_delimited(field.number, &nested, out);
            }
            (Kind::TextToInt32, Value::Message(entry)) => {
                let (mut key, mut count) = (None, None);
                for (part, value) in entry {
                    match (part.as_str(), value) {
                        ("key", Value::Scalar(s)) => key = Some(s),
                        ("value", Value::Scalar(s)) => count = Some(int(&here, &s, Kind::Int32)?),
                        (other, _) => return bad(format!("{here}: unknown entry field '{other}'")),
                    }
                }
                let (Some(key), Some(count)) = (key, count) else {
                    return bad(format!("{here}: an entry needs a key and a value"));
                };
                let mut entry = Vec::new();
                length_delimited(1, key.as_bytes(), &mut entry);
                encode_key(2, WireType::Varint, &mut entry);
                encode_varint(count as u64, &mut entry);
                length_delimited(field.number, &entry, out);
            }
            (Kind::Text, Value::Scalar(s)) => length_delimited(field.number, s.as_bytes(), out),
            (Kind::Double, Value::Scalar(s)) => {
                let Some(v) = s.parse::<f64>().ok().filter(|v| v.is_finite()) else {
                    return bad(format!("{here}: '{s}' is not a number"));
                };
                encode_key(field.number, WireType::SixtyFourBit, out);
                out.extend_from_slice(&v.to_le_bytes());
            }
            (kind @ (Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Enum(_)), Value::Scalar(s)) => {
                let v = int(&here, &s, kind)?;
                encode_key(field.number, WireType::Varint, out);
                // Negative int32s and enums are sign-extended to ten bytes, as protobuf writes them.
                encode_varint(v as u64, out);
            }
            _ => return bad(format!("{here}: a message and a scalar are confused")),
        }
    }
    Ok(())
}

/// A varint field's value: an integer in the kind's range, a bool, or an enum's name or number.
fn int(here: &str, s: &str, kind: Kind) -> Result<i64, SessionConfigError> {
    let parsed = match kind {
        Kind::Bool => text_format::boolean(s).map(i64::from),
        Kind::Int32 => s.parse::<i32>().ok().map(i64::from),
        Kind::Int64 => s.parse::<i64>().ok(),
        Kind::Enum(values) => values
            .iter()
            .find(|(name, _)| *name == s)
            .map(|&(_, v)| i64::from(v))
            .or_else(|| {
                let v = s.parse::<i32>().ok()?;
                values
                    .iter()
                    .any(|&(_, known)| known == v)
                    .then_some(i64::from(v))
            }),
        _ => None,
    };
    parsed.ok_or_else(|| SessionConfigError(format!("{here}: '{s}' is not a valid value")))
}

fn length_delimited(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn encodes_as_tensorflow_serializes() {
        // Expected bytes from TensorFlow's own Python protobuf (`text_format.Parse` then
        // `SerializeToString`) of the same text.
        let text = r#"
            device_count { key: "GPU" value: 0 }
            intra_op_parallelism_threads: 3
            inter_op_parallelism_threads: 2
            gpu_options { per_process_gpu_memory_fraction: 0.5 allow_growth: true visible_device_list: "0" }
            allow_soft_placement: true
            graph_options {
              optimizer_options { opt_level: L0 global_jit_level: OFF }
              rewrite_options { auto_mixed_precision_onednn_bfloat16: ON }
            }
            operation_timeout_in_ms: 60000
        "#;
        assert_eq!(hex(&encode(text).unwrap()), EXPECTED);
    }

    const EXPECTED: &str = "0a070a03475055100010032802320e09000000000000e03f20012a01303801521d1a1618ffffffffffffffffff0128ffffffffffffffffff015203f8010158e0d403";

    #[test]
    fn refuses_what_it_does_not_know_by_name() {
        let error = encode("rpc_options { use_rpc_for_inprocess_master: true }").unwrap_err();
        assert_eq!(
            error.to_string(),
            "Error parsing text-format tensorflow.ConfigProto: rpc_options: not a field tfsandbox serve supports"
        );
        let error = encode("gpu_options { allow_growth: maybe }").unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("gpu_options.allow_growth: 'maybe' is not a valid value"),
            "{error}"
        );
        let error = encode("intra_op_parallelism_threads: 5000000000").unwrap_err();
        assert!(
            error.to_string().contains("is not a valid value"),
            "{error}"
        );
        assert!(encode("gpu_options: 3").is_err());
    }

    #[test]
    fn bfloat16_is_the_only_mixed_precision_mode() {
        assert_eq!(
            hex(&mixed_precision("bfloat16")),
            // graph_options (10) { rewrite_options (10) { field 31: ON (1) } }
            "52055203f80101"
        );
        assert!(mixed_precision("float16").is_empty());
        assert!(mixed_precision("").is_empty());
    }
}
