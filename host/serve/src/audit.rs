//! `--audit_log`: one JSON object per line for every security event, the sandboxes' own
//! ([`tfsandbox::Event`], `"source": "sandbox"`) and serve's (`"source": "serve"`): versions
//! loaded and refused, calls and the calls refused by authentication or the policy, each with
//! its request id. Tokens are never written.
//!
//! Request ids: a call's `x-request-id` (gRPC metadata or HTTP header) is kept if it is 1 to
//! [`MAX_REQUEST_ID`] printable ASCII characters, else replaced by one made here; the answer
//! carries it back in `x-request-id`, and the host's log lines for the call carry it as the
//! `request_id` field of their `call` span.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tonic::codegen::http;
use tracing::Instrument;

/// The longest request id a client may give.
pub const MAX_REQUEST_ID: usize = 128;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Where audit lines go (with none configured, nowhere), and how many of each kind there were.
pub struct Audit {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    /// Events by source and kind, for the Prometheus counters.
    counts: Mutex<std::collections::BTreeMap<(&'static str, String), u64>>,
}

/// Every kind, so each counter shows (at 0) before its first event.
const KINDS: [(&str, &str); 14] = [
    ("serve", "call"),
    ("serve", "call_refused"),
    ("serve", "version_loaded"),
    ("serve", "version_refused"),
    ("sandbox", "sandbox_started"),
    ("sandbox", "model_loaded"),
    ("sandbox", "worker_restarted"),
    ("sandbox", "gave_up"),
    ("sandbox", "killed_past_deadline"),
    ("sandbox", "limit_hit"),
    ("sandbox", "log_dropped"),
    ("sandbox", "worker_not_reading"),
    ("sandbox", "events_lost"),
    ("sandbox", "events_lost_count"),
];

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

impl Audit {
    /// No audit log.
    pub fn none() -> Arc<Audit> {
        Arc::new(Audit::with(None))
    }

    fn with(out: Option<Mutex<Box<dyn Write + Send>>>) -> Audit {
        Audit {
            out,
            counts: Mutex::new(
                KINDS
                    .iter()
                    .map(|&(source, kind)| ((source, kind.to_string()), 0))
                    .collect(),
            ),
        }
    }

    /// `-`: standard error; else the file, appended to (created with mode 0600).
    pub fn open(path: &Path) -> std::io::Result<Arc<Audit>> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stderr())
        } else {
            use std::os::unix::fs::OpenOptionsExt;
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)?,
            )
        };
        Ok(Arc::new(Audit::with(Some(Mutex::new(out)))))
    }

    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// One line: `time` (seconds since the epoch), `source`, `event`, then `fields`.
    fn write(&self, source: &'static str, event: &str, fields: Value) {
        self.count(source, event, 1);
        let Some(out) = &self.out else {
            return;
        };
        let mut line = Map::new();
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        line.insert("time".into(), json!((time * 1000.0).round() / 1000.0));
        line.insert("source".into(), json!(source));
        line.insert("event".into(), json!(event));
        if let Value::Object(fields) = fields {
            for (key, value) in fields {
                if key != "event" {
                    line.insert(key, value);
                }
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::error!("cannot write the audit log: {error}");
        }
    }

    fn count(&self, source: &'static str, event: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((source, event.to_string())).or_insert(0) += n;
    }

    /// The counters in Prometheus's text exposition format (version 0.0.4), written by hand: one
    /// counter family, `tfsandbox_security_events_total`, labelled by source and event kind.
    pub fn prometheus_text(&self) -> String {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from(
            "# HELP tfsandbox_security_events_total Security events, as in --audit_log, by source and kind (events_lost_count: events the writer lost).\n# TYPE tfsandbox_security_events_total counter\n",
        );
        for ((source, event), n) in counts.iter() {
            // Kinds are snake_case identifiers of this program: nothing to escape.
            text.push_str(&format!(
                "tfsandbox_security_events_total{{source=\"{source}\",event=\"{event}\"}} {n}\n"
            ));
        }
        text
    }

    /// One of serve's own events.
    pub fn record(&self, event: &str, fields: Value) {
        self.write("serve", event, fields);
    }

    /// Writes every event of the sandboxes' stream until it closes; a loss (this writer fell
    /// behind) is written as `events_lost` with its count.
    pub fn follow(self: Arc<Self>, events: &tfsandbox::Events) -> tokio::task::JoinHandle<()> {
        let mut rx = events.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        let fields = serde_json::to_value(&event).unwrap_or(Value::Null);
                        self.write("sandbox", event.kind(), fields);
                    }
                    Err(RecvError::Lagged(lost)) => {
                        self.count("sandbox", "events_lost_count", lost);
                        self.write("sandbox", "events_lost", json!({ "count": lost }))
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}

tokio::task_local! {
    /// The request id of the call whose future this is.
    static CURRENT: String;
}

/// The request id of the call being answered, for what it asks of the sandboxes.
pub(crate) fn current_request_id() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A call's request id, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's request id if it is acceptable, else a new one.
pub fn request_id(given: Option<&[u8]>) -> String {
    match given {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID
                && id.iter().all(|b| (0x21..=0x7e).contains(b)) =>
        {
            String::from_utf8_lossy(id).into_owned()
        }
        _ => made_request_id(),
    }
}

/// `tfs-` and this process's start time and a counter, in hex: unique within a host's runs.
fn made_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id()) << 40
    });
    format!("tfs-{start:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Gives every call (gRPC or REST) its request id: in its extensions, as the `request_id` of
/// its `call` span, in an audit line, and in its answer's `x-request-id`.
#[derive(Clone)]
pub(crate) struct RequestIdLayer(pub Arc<Audit>);

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;

    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds {
            inner,
            audit: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct RequestIds<S> {
    inner: S,
    audit: Arc<Audit>,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for RequestIds<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let given = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .map(|v| v.as_bytes());
        let replaced = given.is_some_and(|g| request_id(Some(g)) != String::from_utf8_lossy(g));
        let id = request_id(given);
        let value = http::HeaderValue::from_str(&id).expect("a request id is printable ASCII");
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, value.clone());
        request.extensions_mut().insert(RequestId(id.clone()));
        let path = request.uri().path();
        // Health checks and reflection are not calls on a model.
        if !path.starts_with("/grpc.") {
            self.audit.record(
                "call",
                json!({
                    "request_id": id,
                    "method": format!("{} {path}", request.method()),
                    "identity": peer(&request),
                    "given_request_id_replaced": replaced,
                }),
            );
        }
        let span = tracing::info_span!("call", request_id = %id);
        let call = CURRENT.scope(id, self.inner.call(request).instrument(span));
        Box::pin(async move {
            let mut response = call.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
            Ok(response)
        })
    }
}

/// A call refused by authentication or the policy: `call_refused`, with its status and message
/// (which name identities, never a token).
pub(crate) fn refused(
    audit: &Audit,
    request_id: Option<&str>,
    identity: Option<&str>,
    model: Option<&str>,
    method: &str,
    status: &tonic::Status,
) {
    audit.record(
        "call_refused",
        json!({
            "request_id": request_id,
            "identity": identity,
            "model": model,
            "method": method,
            "status": format!("{:?}", status.code()),
            "message": status.message(),
        }),
    );
}

/// The connection's identity, on gRPC's and REST's connections.
pub(crate) fn peer<B>(request: &http::Request<B>) -> Option<String> {
    let extensions = request.extensions();
    extensions
        .get::<crate::listen::ConnectionInfo>()
        .or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<crate::listen::ConnectionInfo>>()
                .map(|c| &c.0)
        })
        .and_then(|c| c.peer())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_request_id_is_kept_only_if_short_and_printable() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        let long = vec![b'a'; MAX_REQUEST_ID];
        assert_eq!(request_id(Some(&long)), "a".repeat(MAX_REQUEST_ID));
        for bad in [
            &b""[..],
            &b"with space"[..],
            &b"new\nline"[..],
            &b"\x1b[31mred"[..],
            "caf\u{e9}".as_bytes(),
            &[b'a'; MAX_REQUEST_ID + 1][..],
        ] {
            let made = request_id(Some(bad));
            assert!(made.starts_with("tfs-"), "{bad:?} gave {made}");
        }
        let (one, two) = (request_id(None), request_id(None));
        assert!(one.starts_with("tfs-") && one != two, "{one} {two}");
    }

    #[test]
    fn every_kind_is_counted_in_the_exposition_format() {
        let audit = Audit::none();
        audit.record("call", json!({}));
        audit.record("call", json!({}));
        let text = audit.prometheus_text();
        assert!(text.contains("# TYPE tfsandbox_security_events_total counter\n"));
        assert!(
            text.contains("tfsandbox_security_events_total{source=\"serve\",event=\"call\"} 2\n")
        );
        assert!(text.contains(
            "tfsandbox_security_events_total{source=\"sandbox\",event=\"worker_restarted\"} 0\n"
        ));
    }

    #[test]
    fn lines_are_json_objects_with_time_source_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).unwrap();
        audit.record("call", json!({ "request_id": "r1" }));
        audit.record("version_loaded", json!({ "version": 1 }));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "call");
        assert_eq!(lines[0]["source"], "serve");
        assert_eq!(lines[0]["request_id"], "r1");
        assert!(lines[1]["time"].as_f64().unwrap() > 1.0e9);
    }
}
