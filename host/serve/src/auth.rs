//! Who may call which model, and how a caller is known: the one decision both the gRPC services
//! and the REST API take for every call ([`Authority::decide`]).
//!
//! A caller's identities come from its connection and from its call:
//! - `cert:<CN>`: the common name of a client certificate the TLS handshake verified against
//!   `custom_ca` (`--ssl_config_file` with `client_verify: true`);
//! - `uid:<N>`: the peer's user id on the Unix socket, from SO_PEERCRED (the kernel's word, not
//!   the client's);
//! - a token's name: `authorization: Bearer <token>` (gRPC metadata or HTTP header), looked up in
//!   `--auth_tokens_file` by the token's SHA-256, compared in constant time.
//!
//! With nothing configured every call is let through, as before (serve then refuses to listen
//! beyond loopback unless asked: see `ServeError::UnauthenticatedRemote`). Once a token file, a
//! policy or client verification is configured, a call with no identity, or with a bearer token
//! that is not known, is UNAUTHENTICATED (HTTP 401); one whose identities the policy does not allow
//! for that model and method is PERMISSION_DENIED (HTTP 403). Nothing is allowed that a rule does
//! not allow. With client verification but no policy, the CA is the policy, as in TensorFlow
//! Serving: every verified certificate may call everything.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::codegen::http;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token or policy file larger than this is refused: both are a few lines, and the cap keeps a
/// wrong path (a device, a log) from being read whole.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The prefixes of the identities a connection carries; a token may not take them, or its holder
/// could pass for a user or a certificate.
const TRANSPORT_PREFIXES: [&str; 2] = ["cert:", "uid:"];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is writable by group or others (mode {mode:03o}): anyone who can write it could grant themselves access; chmod go-w it", .path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is over {MAX_FILE_BYTES} bytes", .path.display())]
    TooLarge { path: PathBuf },
    #[error("{}:{line}: {message}", .path.display())]
    Tokens {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", .path.display())]
    Policy { path: PathBuf, message: String },
    #[error("--auth_tokens_file is given without --auth_policy_file: with no rule every call would be refused (deny by default); say in a policy what each identity may call")]
    TokensWithoutPolicy,
}

/// The calls a rule can allow, named as TensorFlow Serving's services name their methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Predict,
    Classify,
    Regress,
    MultiInference,
    GetModelMetadata,
    GetModelStatus,
    /// Replaces the served models; asked on model `*`, so only a rule for every model allows it.
    HandleReloadConfigRequest,
}

impl Method {
    const ALL: [Method; 7] = [
        Method::Predict,
        Method::Classify,
        Method::Regress,
        Method::MultiInference,
        Method::GetModelMetadata,
        Method::GetModelStatus,
        Method::HandleReloadConfigRequest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Predict => "Predict",
            Method::Classify => "Classify",
            Method::Regress => "Regress",
            Method::MultiInference => "MultiInference",
            Method::GetModelMetadata => "GetModelMetadata",
            Method::GetModelStatus => "GetModelStatus",
            Method::HandleReloadConfigRequest => "HandleReloadConfigRequest",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a call is refused; each maps to the status TensorFlow Serving's clients know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No identity, or credentials that are not valid: UNAUTHENTICATED, HTTP 401.
    Unauthenticated(String),
    /// Known, but not allowed this: PERMISSION_DENIED, HTTP 403.
    PermissionDenied(String),
}

impl From<Denied> for tonic::Status {
    fn from(denied: Denied) -> tonic::Status {
        match denied {
            Denied::Unauthenticated(message) => tonic::Status::unauthenticated(message),
            Denied::PermissionDenied(message) => tonic::Status::permission_denied(message),
        }
    }
}

/// Set on a request by the REST API once it has taken the decision for the call, so that the
/// gRPC code it then calls does not take it again without the connection's identity. Only code
/// in this crate can make one; a client cannot send request extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decided;

/// `IDENTITY SHA256HEX` from the token file.
struct Token {
    identity: String,
    sha256: [u8; 32],
}

/// One allow rule: `identity` may call `methods` on `models` (`"*"` in either: any).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// `cert:CN`, `uid:N`, a token's name, or `"*"`: any authenticated caller.
    identity: String,
    models: Vec<String>,
    methods: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allow: Vec<Rule>,
}

/// The authentication and authorisation settings, read once at start.
#[derive(Default)]
pub struct Authority {
    tokens: Vec<Token>,
    policy: Option<Vec<Rule>>,
    /// Whether calls must carry an identity at all.
    enforced: bool,
}

impl fmt::Debug for Authority {
    // The token hashes are left out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("tokens", &self.tokens.len())
            .field("rules", &self.policy.as_ref().map(Vec::len))
            .field("enforced", &self.enforced)
            .finish()
    }
}

impl Authority {
    /// Everyone may call everything: serve's behaviour with no authentication configured.
    pub fn open() -> Authority {
        Authority::default()
    }

    /// From `--auth_tokens_file` and `--auth_policy_file`; `client_verify`: TLS verifies client
    /// certificates, which is authentication enough on its own.
    pub fn load(
        tokens: Option<&Path>,
        policy: Option<&Path>,
        client_verify: bool,
    ) -> Result<Authority, AuthError> {
        if tokens.is_some() && policy.is_none() {
            return Err(AuthError::TokensWithoutPolicy);
        }
        let tokens = match tokens {
            Some(path) => parse_tokens(path, &read_private(path)?)?,
            None => Vec::new(),
        };
        let policy = match policy {
            Some(path) => Some(parse_policy(path, &read_private(path)?)?),
            None => None,
        };
        let enforced = !tokens.is_empty() || policy.is_some() || client_verify;
        Ok(Authority {
            tokens,
            policy,
            enforced,
        })
    }

    /// Whether calls must carry an identity (anything is configured).
    pub fn is_enforced(&self) -> bool {
        self.enforced
    }

    /// The decision for one call. `peer`: the connection's identity (`cert:CN`, `uid:N`), if
    /// any; `authorization`: the call's `authorization` value, if it sent one.
    pub fn decide(
        &self,
        peer: Option<&str>,
        authorization: Option<&[u8]>,
        model: &str,
        method: Method,
    ) -> Result<(), Denied> {
        if !self.enforced {
            return Ok(());
        }
        let identities = self.authenticate(peer, authorization)?;
        let Some(rules) = &self.policy else {
            // Client verification alone: the handshake already admitted only the CA's clients.
            return Ok(());
        };
        let allowed = rules.iter().any(|rule| {
            (rule.identity == "*" || identities.contains(&rule.identity.as_str()))
                && rule.models.iter().any(|m| m == "*" || m == model)
                && rule.methods.iter().any(|m| m == "*" || m == method.name())
        });
        if allowed {
            return Ok(());
        }
        let who = identities.join(", ");
        tracing::info!(identity = %who, model, %method, "call refused by the policy");
        Err(Denied::PermissionDenied(format!(
            "{who} may not call {method} on model '{model}'"
        )))
    }

    /// The caller's identities, or UNAUTHENTICATED: the first half of [`Authority::decide`],
    /// which needs no model, so it can be taken before a request's body is read.
    pub fn authenticate<'a>(
        &'a self,
        peer: Option<&'a str>,
        authorization: Option<&[u8]>,
    ) -> Result<Vec<&'a str>, Denied> {
        if !self.enforced {
            return Ok(Vec::new());
        }
        let mut identities: Vec<&str> = peer.into_iter().collect();
        if let Some(value) = authorization {
            identities.push(self.token_identity(value)?);
        }
        if identities.is_empty() {
            return Err(Denied::Unauthenticated(
                "no credentials: send 'authorization: Bearer TOKEN', connect with a client certificate, or call over the Unix socket".to_string(),
            ));
        }
        Ok(identities)
    }

    /// The name of the token `Bearer <token>` carries, or UNAUTHENTICATED.
    fn token_identity(&self, value: &[u8]) -> Result<&str, Denied> {
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Denied::Unauthenticated("authorization is not 'Bearer TOKEN'".to_string())
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, in constant time, so the time taken says nothing about how
        // close a guess came or which entry it matched.
        let mut found = None;
        for entry in &self.tokens {
            if bool::from(entry.sha256.ct_eq(&digest)) {
                found = Some(entry.identity.as_str());
            }
        }
        found.ok_or_else(|| {
            tracing::info!("a call with an unknown bearer token refused");
            Denied::Unauthenticated("the bearer token is not valid".to_string())
        })
    }
}

/// A file's text, refused if group or others may write it or it is past [`MAX_FILE_BYTES`]. The
/// mode is read from the opened file, so it is the file that is read.
fn read_private(path: &Path) -> Result<String, AuthError> {
    let read_error = |source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(AuthError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(AuthError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

fn parse_tokens(path: &Path, text: &str) -> Result<Vec<Token>, AuthError> {
    let mut tokens: Vec<Token> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let error = |message: String| AuthError::Tokens {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [identity, hex_digest] = fields[..] else {
            return Err(error(
                "expected 'IDENTITY SHA256HEX' (the sha256 of the token, in hex)".to_string(),
            ));
        };
        if TRANSPORT_PREFIXES.iter().any(|p| identity.starts_with(p)) || identity == "*" {
            return Err(error(format!(
                "'{identity}': a token's name may not be '*' or start with cert: or uid:, which name a connection's identity"
            )));
        }
        let sha256: [u8; 32] = hex::decode(hex_digest)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| error(format!("'{hex_digest}' is not 64 hex digits (a sha256)")))?;
        // Two names for one token would make the caller's identity depend on the file's order.
        if tokens.iter().any(|t| t.sha256 == sha256) {
            return Err(error(format!("the token of '{identity}' is listed twice")));
        }
        tokens.push(Token {
            identity: identity.to_string(),
            sha256,
        });
    }
    if tokens.is_empty() {
        return Err(AuthError::Tokens {
            path: path.to_path_buf(),
            line: 0,
            message: "no token listed".to_string(),
        });
    }
    Ok(tokens)
}

fn parse_policy(path: &Path, text: &str) -> Result<Vec<Rule>, AuthError> {
    let error = |message: String| AuthError::Policy {
        path: path.to_path_buf(),
        message,
    };
    let file: PolicyFile = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    for rule in &file.allow {
        if rule.identity.is_empty() {
            return Err(error("a rule has an empty identity".to_string()));
        }
        // A misspelt method would otherwise allow nothing, silently.
        if let Some(unknown) = rule
            .methods
            .iter()
            .find(|m| *m != "*" && !Method::ALL.iter().any(|k| k.name() == *m))
        {
            let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            return Err(error(format!(
                "method '{unknown}' of '{}' is not one of {} or '*'",
                rule.identity,
                known.join(", ")
            )));
        }
    }
    Ok(file.allow)
}

/// The gRPC paths of TensorFlow Serving's services, which [`Authenticate`] guards. Health and
/// reflection stay open (see the README); the profiler answers every call UNIMPLEMENTED.
const GUARDED_PATHS: [&str; 2] = [
    "/tensorflow.serving.PredictionService/",
    "/tensorflow.serving.ModelService/",
];

/// The tower layer on the gRPC server that refuses a call to TensorFlow Serving's services with
/// no valid credentials before its body is read or decoded, so an unauthenticated client costs
/// its headers only. Which model it may call is decided by the service once the request names
/// it ([`Authority::decide`], the same code).
pub(crate) fn authenticate_layer(
    authority: Arc<Authority>,
    audit: Arc<crate::audit::Audit>,
) -> AuthenticateLayer {
    AuthenticateLayer(authority, audit)
}

#[derive(Clone)]
pub(crate) struct AuthenticateLayer(Arc<Authority>, Arc<crate::audit::Audit>);

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            authority: self.0.clone(),
            audit: self.1.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    authority: Arc<Authority>,
    audit: Arc<crate::audit::Audit>,
}

impl<S, B, ResponseBody> tower::Service<http::Request<B>> for Authenticate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if GUARDED_PATHS.iter().any(|p| path.starts_with(p)) {
            let peer = request
                .extensions()
                .get::<crate::listen::ConnectionInfo>()
                .and_then(|c| c.peer());
            let authorization = request.headers().get("authorization").map(|v| v.as_bytes());
            if let Err(denied) = self.authority.authenticate(peer, authorization) {
                let status = tonic::Status::from(denied);
                let id = request
                    .extensions()
                    .get::<crate::audit::RequestId>()
                    .map(|id| id.0.as_str());
                // The model is in the body, not read for a caller with no identity.
                crate::audit::refused(&self.audit, id, peer, None, path, &status);
                let response = status.into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// `cert:<CN>` of a DER certificate, if it has a common name.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(format!("cert:{cn}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn authority() -> Authority {
        let dir = tempfile::tempdir().unwrap();
        let tokens = write(
            dir.path(),
            "tokens",
            &format!(
                "# who\nalice {}\nbob {}  # a comment\n",
                sha("alice-secret"),
                sha("bob-secret")
            ),
            0o600,
        );
        let policy = write(
            dir.path(),
            "policy.json",
            r#"{"allow":[
                {"identity":"alice","models":["m"],"methods":["Predict","GetModelMetadata"]},
                {"identity":"uid:1000","models":["*"],"methods":["*"]}
            ]}"#,
            0o644,
        );
        Authority::load(Some(&tokens), Some(&policy), false).unwrap()
    }

    #[test]
    fn decisions() {
        let auth = authority();
        let bearer = |t: &str| format!("Bearer {t}").into_bytes();
        assert_eq!(
            auth.decide(None, Some(&bearer("alice-secret")), "m", Method::Predict),
            Ok(())
        );
        assert!(matches!(
            auth.decide(None, None, "m", Method::Predict),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.decide(None, Some(&bearer("alice-secreT")), "m", Method::Predict),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.decide(None, Some(b"Basic YWxpY2U6eA=="), "m", Method::Predict),
            Err(Denied::Unauthenticated(_))
        ));
        // Known, but not for this model, or this method.
        let denied = auth.decide(
            None,
            Some(&bearer("alice-secret")),
            "other",
            Method::Predict,
        );
        assert_eq!(
            denied,
            Err(Denied::PermissionDenied(
                "alice may not call Predict on model 'other'".to_string()
            ))
        );
        assert!(matches!(
            auth.decide(None, Some(&bearer("alice-secret")), "m", Method::Classify),
            Err(Denied::PermissionDenied(_))
        ));
        assert!(matches!(
            auth.decide(None, Some(&bearer("bob-secret")), "m", Method::Predict),
            Err(Denied::PermissionDenied(_))
        ));
        assert_eq!(
            auth.decide(Some("uid:1000"), None, "any", Method::Regress),
            Ok(())
        );
        assert!(matches!(
            auth.decide(Some("uid:1001"), None, "m", Method::Predict),
            Err(Denied::PermissionDenied(_))
        ));
        // A bad token is refused even on a connection that is allowed.
        assert!(matches!(
            auth.decide(
                Some("uid:1000"),
                Some(&bearer("nope")),
                "m",
                Method::Predict
            ),
            Err(Denied::Unauthenticated(_))
        ));
    }

    /// The layer answers UNAUTHENTICATED itself, never calling the service (which would read
    /// the body); a call with credentials, and health, go through.
    #[tokio::test]
    async fn the_layer_refuses_before_the_service() {
        use tower::{Layer, ServiceExt};
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |_: http::Request<()>| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
        });
        let layered =
            authenticate_layer(Arc::new(authority()), crate::audit::Audit::none()).layer(service);
        let call = |path: &str, token: Option<&str>| {
            let mut request = http::Request::builder().uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            layered.clone().oneshot(request.body(()).unwrap())
        };
        let grpc_status = |r: &http::Response<String>| {
            r.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_string())
        };
        let predict = "/tensorflow.serving.PredictionService/Predict";
        let refused = call(predict, None).await.unwrap();
        assert_eq!(grpc_status(&refused).as_deref(), Some("16"));
        let refused = call("/tensorflow.serving.ModelService/GetModelStatus", Some("x"))
            .await
            .unwrap();
        assert_eq!(grpc_status(&refused).as_deref(), Some("16"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        call(predict, Some("alice-secret")).await.unwrap();
        call("/grpc.health.v1.Health/Check", None).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn open_and_client_verify_alone() {
        assert_eq!(
            Authority::open().decide(None, None, "m", Method::Predict),
            Ok(())
        );
        let mtls = Authority::load(None, None, true).unwrap();
        assert!(mtls.is_enforced());
        assert_eq!(
            mtls.decide(Some("cert:client"), None, "m", Method::Predict),
            Ok(())
        );
        assert!(matches!(
            mtls.decide(None, None, "m", Method::Predict),
            Err(Denied::Unauthenticated(_))
        ));
    }

    #[test]
    fn files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("alice {}\n", sha("a"));
        let policy = write(dir.path(), "p.json", r#"{"allow":[]}"#, 0o600);
        let writable = write(dir.path(), "t1", &good, 0o620);
        let error = Authority::load(Some(&writable), Some(&policy), false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("t1 is writable by group or others (mode 620)"),
            "{error}"
        );
        let spoof = write(dir.path(), "t2", &format!("uid:0 {}\n", sha("a")), 0o600);
        assert!(Authority::load(Some(&spoof), Some(&policy), false).is_err());
        let short = write(dir.path(), "t3", "alice abcd\n", 0o600);
        let error = Authority::load(Some(&short), Some(&policy), false).unwrap_err();
        assert!(
            error.to_string().contains("t3:1: 'abcd' is not 64 hex"),
            "{error}"
        );
        let big = write(
            dir.path(),
            "t4",
            &"#".repeat(MAX_FILE_BYTES as usize + 1),
            0o600,
        );
        assert!(matches!(
            Authority::load(Some(&big), Some(&policy), false),
            Err(AuthError::TooLarge { .. })
        ));
        let tokens = write(dir.path(), "t5", &good, 0o600);
        assert!(matches!(
            Authority::load(Some(&tokens), None, false),
            Err(AuthError::TokensWithoutPolicy)
        ));
        let typo = write(
            dir.path(),
            "p2.json",
            r#"{"allow":[{"identity":"a","models":["*"],"methods":["predict"]}]}"#,
            0o600,
        );
        let error = Authority::load(None, Some(&typo), false).unwrap_err();
        assert!(error.to_string().contains("method 'predict'"), "{error}");
        let unknown = write(dir.path(), "p3.json", r#"{"rules":[]}"#, 0o600);
        assert!(Authority::load(None, Some(&unknown), false).is_err());
    }
}
