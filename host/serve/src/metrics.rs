//! The Prometheus metrics served at `--monitoring_config_file`'s path (besides the security
//! event counters of [`crate::audit`]): TensorFlow Serving's own where one exists, under its
//! name, and the sandboxes' state, read when scraped.
//!
//! - `:tensorflow:serving:request_count{model_name,status}`: calls by model and outcome;
//! - `:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`: version loads;
//! - `tfsandbox_calls_in_flight{model_name,version}`;
//! - `tfsandbox_worker_restarts_total{model_name,version,sandbox}`;
//! - `tfsandbox_worker_memory_bytes{model_name,version,sandbox}`: the resident memory of the
//!   sandbox's processes (process runtime; the other runtimes' workers are not this host's
//!   children to read).
//!
//! Kills past a deadline are `tfsandbox_security_events_total{event="killed_past_deadline"}`.
//! The text format (0.0.4) is written by hand: a few lines, and no crate here writes it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::models::Models;

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    loads: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// A label value in the text format: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// TensorFlow's name for a status code, as its metrics label them.
fn status_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Metrics {
    /// A call on `model` that ended with `code`.
    pub fn request(&self, model: &str, code: tonic::Code) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((model.to_string(), status_name(code)))
            .or_insert(0) += 1;
    }

    /// A version load from `path`, as TensorFlow counts SavedModel loads.
    pub fn load(&self, path: &str, loaded: bool) {
        let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        let status = if loaded { "success" } else { "fail" };
        *loads.entry((path.to_string(), status)).or_insert(0) += 1;
    }

    pub fn prometheus_text(&self, models: &Models) -> String {
        let mut text = String::new();
        text.push_str("# TYPE :tensorflow:serving:request_count counter\n");
        for ((model, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                text,
                ":tensorflow:serving:request_count{{model_name=\"{}\",status=\"{status}\"}} {n}",
                label(model)
            );
        }
        text.push_str("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter\n");
        for ((path, status), n) in self.loads.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                text,
                ":tensorflow:cc:saved_model:load_attempt_count{{model_path=\"{}\",status=\"{status}\"}} {n}",
                label(path)
            );
        }
        let mut in_flight = String::from("# TYPE tfsandbox_calls_in_flight gauge\n");
        let mut restarts = String::from("# TYPE tfsandbox_worker_restarts_total counter\n");
        let mut memory = String::from("# TYPE tfsandbox_worker_memory_bytes gauge\n");
        for (name, model) in models.all().iter() {
            for version in model.versions() {
                let labels = format!(
                    "model_name=\"{}\",version=\"{}\"",
                    label(name),
                    version.number
                );
                let calls: usize = version.pool.load().iter().sum();
                let _ = writeln!(in_flight, "tfsandbox_calls_in_flight{{{labels}}} {calls}");
                for sandbox in version.pool.sandboxes() {
                    let labels = format!("{labels},sandbox=\"{}\"", label(sandbox.id()));
                    let _ = writeln!(
                        restarts,
                        "tfsandbox_worker_restarts_total{{{labels}}} {}",
                        sandbox.generation().saturating_sub(1)
                    );
                    if let Some(bytes) = sandbox.host_pid().and_then(tree_rss_bytes) {
                        let _ =
                            writeln!(memory, "tfsandbox_worker_memory_bytes{{{labels}}} {bytes}");
                    }
                }
            }
        }
        text + &in_flight + &restarts + &memory
    }
}

/// The resident bytes of `pid` and every process below it.
fn tree_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let below: u64 = children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .filter_map(tree_rss_bytes)
        .sum();
    Some(kib * 1024 + below)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(tree_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
