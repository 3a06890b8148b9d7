//! Authentication and authorisation of `tfsandbox serve`, through the real server, real models
//! in real sandboxes, and TensorFlow Serving's API (the generated Rust client, and plain HTTP for
//! REST): bearer tokens and the policy on gRPC and REST, mutual TLS with certificates made here,
//! the Unix socket peer's uid, and what serve refuses at start (an open server beyond loopback,
//! a token file others may write).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tfsandbox::RuntimeKind;
use tfsandbox_checks::serve::{unix_channel, Serve};
use tfsandbox_checks::tfsandbox;
use tfsandbox_checks::{copy_dir, fixture};
use tfsandbox_serve::proto::serving::model_service_client::ModelServiceClient;
use tfsandbox_serve::proto::serving::prediction_service_client::PredictionServiceClient;
use tfsandbox_serve::proto::serving::{GetModelStatusRequest, ModelSpec, PredictRequest};
use tfsandbox_serve::proto::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls::{self, pki_types};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Starts `tfsandbox serve` (gRPC on a free loopback port) with `args`; returns once every
/// listener is announced.
fn start_serve(args: &[&std::ffi::OsStr]) -> Serve {
    Serve::start(Serve::command(RuntimeKind::Process, 0, args))
}

/// What `tfsandbox serve` prints on stderr when started with `args`; it must fail before any
/// model is loaded. A server that starts instead is killed, and the check fails.
fn serve_refuses(args: &[&std::ffi::OsStr]) -> String {
    let mut child = Command::new(tfsandbox())
        .args(["serve", "--port", "0", "--runtime", "process"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tfsandbox serve");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap();
    match status {
        Some(status) => assert!(
            !status.success(),
            "tfsandbox serve {args:?} should have failed; stderr: {stderr}"
        ),
        None => panic!("tfsandbox serve {args:?} started instead of refusing; stderr: {stderr}"),
    }
    stderr
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Two models, both half_plus_two under different names, in a config file under `dir`.
fn two_models(dir: &Path) -> PathBuf {
    for name in ["half_plus_two", "other"] {
        copy_dir(&fixture("half_plus_two"), &dir.join(name).join("1"));
    }
    let config_file = dir.join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{\n  config {{ name: 'half_plus_two' base_path: '{}' }}\n  config {{ name: 'other' base_path: '{}' }}\n}}\n",
            dir.join("half_plus_two").display(),
            dir.join("other").display()
        ),
    )
    .unwrap();
    config_file
}

fn spec(model: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: model.to_string(),
        ..ModelSpec::default()
    })
}

fn x(values: &[f32]) -> TensorProto {
    TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [values.len() as i64, 1]
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: values.to_vec(),
        ..TensorProto::default()
    }
}

/// Predict on `model` with `x = [1, 2]`, with `token` as a bearer token if given; the answer's
/// `y` (half_plus_two: `x / 2 + 2`).
async fn predict(channel: &Channel, model: &str, token: Option<&str>) -> Result<Vec<f32>, Code> {
    let mut request = tonic::Request::new(PredictRequest {
        model_spec: spec(model),
        inputs: [("x".to_string(), x(&[1.0, 2.0]))].into(),
        output_filter: Vec::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request.set_timeout(Duration::from_secs(60));
    PredictionServiceClient::new(channel.clone())
        .predict(request)
        .await
        .map(|r| r.into_inner().outputs["y"].float_val.clone())
        .map_err(|status| status.code())
}

async fn model_status(channel: &Channel, model: &str, token: Option<&str>) -> Code {
    let mut request = tonic::Request::new(GetModelStatusRequest {
        model_spec: spec(model),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match ModelServiceClient::new(channel.clone())
        .get_model_status(request)
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn plain_channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("connect to serve")
}

/// One HTTP/1.1 request over `io`; the status code and the body.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    io.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A TLS peer may close without close_notify once it has answered; the answer is read by then.
    let _ = io.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn rest(address: &str, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let body = if method == "POST" {
        r#"{"instances": [1.0, 2.0]}"#
    } else {
        ""
    };
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    http(tcp, method, path, token, body).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Bearer tokens and the policy, on gRPC and on REST: no token and a wrong token are
/// UNAUTHENTICATED / 401; a known token on a model or method its rule does not name is
/// PERMISSION_DENIED / 403 (an unknown model too, so the refusal says nothing of what exists);
/// the right token gets the answer.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_and_the_policy_on_grpc_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = two_models(dir.path());
    let tokens = dir.path().join("tokens");
    write_file(
        &tokens,
        &format!(
            "# name sha256(token)\nalice {}\nbob {}\n",
            sha256_hex("alice-token"),
            sha256_hex("bob-token")
        ),
        0o600,
    );
    let policy = dir.path().join("policy.json");
    write_file(
        &policy,
        r#"{"allow": [
            {"identity": "alice", "models": ["half_plus_two"], "methods": ["Predict", "GetModelMetadata"]},
            {"identity": "bob", "models": ["other"], "methods": ["*"]}
        ]}"#,
        0o644,
    );
    let rest_port = free_port();
    let audit_log = dir.path().join("audit.jsonl");
    let server = start_serve(&[
        "--model_config_file".as_ref(),
        config_file.as_os_str(),
        "--auth_tokens_file".as_ref(),
        tokens.as_os_str(),
        "--auth_policy_file".as_ref(),
        policy.as_os_str(),
        format!("--rest_api_port={rest_port}").as_ref(),
        "--audit_log".as_ref(),
        audit_log.as_os_str(),
    ]);
    let channel = plain_channel(&server.address("")).await;

    // gRPC.
    assert_eq!(
        predict(&channel, "half_plus_two", None).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        predict(&channel, "half_plus_two", Some("alice-tokeN")).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        predict(&channel, "half_plus_two", Some("alice-token")).await,
        Ok(vec![2.5, 3.0])
    );
    assert_eq!(
        predict(&channel, "other", Some("alice-token")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        predict(&channel, "no_such_model", Some("alice-token")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        model_status(&channel, "half_plus_two", Some("alice-token")).await,
        Code::PermissionDenied
    );
    assert_eq!(
        predict(&channel, "half_plus_two", Some("bob-token")).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        predict(&channel, "other", Some("bob-token")).await,
        Ok(vec![2.5, 3.0])
    );
    assert_eq!(
        model_status(&channel, "other", Some("bob-token")).await,
        Code::Ok
    );
    assert_eq!(
        model_status(&channel, "other", None).await,
        Code::Unauthenticated
    );

    // REST: the same decisions, with TF Serving's HTTP codes and JSON errors.
    let address = format!("127.0.0.1:{rest_port}");
    let predict_path = "/v1/models/half_plus_two:predict";
    let (code, body) = rest(&address, "POST", predict_path, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (code, body) = rest(&address, "POST", predict_path, Some("wrong")).await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = rest(&address, "POST", predict_path, Some("alice-token")).await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["predictions"],
        serde_json::json!([2.5, 3.0]),
        "{body}"
    );
    let (code, body) = rest(
        &address,
        "POST",
        "/v1/models/other:predict",
        Some("alice-token"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("alice may not call Predict on model 'other'"),
        "{body}"
    );
    let (code, body) = rest(
        &address,
        "GET",
        "/v1/models/half_plus_two",
        Some("alice-token"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let (code, body) = rest(
        &address,
        "GET",
        "/v1/models/half_plus_two/metadata",
        Some("alice-token"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = rest(&address, "GET", "/v1/models/other", Some("bob-token")).await;
    assert_eq!(code, 200, "{body}");

    // REST gives the request id back too, on a refusal as well.
    let mut raw = tokio::net::TcpStream::connect(&address).await.unwrap();
    raw.write_all(
        b"GET /v1/models/other HTTP/1.1\r\nhost: x\r\nx-request-id: rest-7\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nx-request-id: rest-7\r\n"),
        "{answer}"
    );

    // The audit log: every refusal, with who and what, and never a token.
    let text = std::fs::read_to_string(&audit_log).unwrap();
    for secret in ["alice-token", "alice-tokeN", "bob-token"] {
        assert!(!text.contains(secret), "a token in the audit log: {text}");
    }
    let refused: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["event"] == "call_refused")
        .collect();
    let unauthenticated = refused
        .iter()
        .filter(|l| l["status"] == "Unauthenticated")
        .count();
    // gRPC: no token, a wrong token, GetModelStatus with none; REST: none, a wrong one, rest-7.
    assert_eq!(unauthenticated, 6, "{refused:#?}");
    let denied = |model: &str, method: &str| {
        refused.iter().any(|l| {
            l["status"] == "PermissionDenied"
                && l["model"] == model
                && l["method"] == method
                && l["message"].as_str().unwrap_or("").contains("may not call")
        })
    };
    assert!(denied("other", "Predict"), "{refused:#?}");
    assert!(denied("half_plus_two", "GetModelStatus"), "{refused:#?}");
    assert!(
        refused.iter().any(|l| l["request_id"] == "rest-7"),
        "{refused:#?}"
    );
}

/// A CA, and certificates it signs.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate for `cn` (PEM certificate, PEM key): a server's for `localhost`, or a
    /// client's.
    fn issue(&self, cn: &str, server: bool) -> (String, String) {
        let names = if server {
            vec!["localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A rustls client that trusts `ca` and presents `client` (PEM certificate and key) if given.
fn client_config(
    ca: &str,
    client: Option<&(String, String)>,
    alpn: &[u8],
) -> Arc<rustls::ClientConfig> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A gRPC channel over TLS with `config`; `Err` if the connection (the handshake) fails.
async fn tls_channel(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let address = address.to_string();
    Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(30))
        .connect_with_connector(tower::service_fn(move |_| {
            let (address, config) = (address.clone(), config.clone());
            async move {
                let tls = tls_connect(&address, config).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
}

/// `--ssl_config_file` with `client_verify`: TLS on gRPC and REST, a client certificate the CA
/// signed is the caller `cert:CN`, which the policy then allows or not; a client with no
/// certificate, or one another CA signed, does not get through the handshake.
#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_names_the_caller_by_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = two_models(dir.path());
    let pki = Pki::new("tfsandbox test CA");
    let (server_cert, server_key) = pki.issue("localhost", true);
    let allowed = pki.issue("client-a", false);
    let other_client = pki.issue("client-b", false);
    let stranger = Pki::new("another CA").issue("client-a", false);
    let ssl_config = dir.path().join("ssl.config");
    // TensorFlow Serving's SSLConfig, the PEMs inline.
    write_file(
        &ssl_config,
        &format!(
            "server_key: {:?}\nserver_cert: {:?}\ncustom_ca: {:?}\nclient_verify: true\n",
            server_key,
            server_cert,
            pki.ca.pem()
        ),
        0o600,
    );
    let policy = dir.path().join("policy.json");
    write_file(
        &policy,
        r#"{"allow": [{"identity": "cert:client-a", "models": ["half_plus_two"], "methods": ["Predict"]}]}"#,
        0o600,
    );
    let rest_port = free_port();
    let server = start_serve(&[
        "--model_config_file".as_ref(),
        config_file.as_os_str(),
        format!("--ssl_config_file={}", ssl_config.display()).as_ref(),
        "--auth_policy_file".as_ref(),
        policy.as_os_str(),
        format!("--rest_api_port={rest_port}").as_ref(),
    ]);
    let grpc = server.address("");
    assert_eq!(server.address("https://"), format!("127.0.0.1:{rest_port}"));
    let ca = pki.ca.pem();

    let channel = tls_channel(&grpc, client_config(&ca, Some(&allowed), b"h2"))
        .await
        .expect("a TLS connection with client-a's certificate");
    assert_eq!(
        predict(&channel, "half_plus_two", None).await,
        Ok(vec![2.5, 3.0])
    );
    assert_eq!(
        predict(&channel, "other", None).await,
        Err(Code::PermissionDenied)
    );
    let channel = tls_channel(&grpc, client_config(&ca, Some(&other_client), b"h2"))
        .await
        .expect("a TLS connection with client-b's certificate");
    assert_eq!(
        predict(&channel, "half_plus_two", None).await,
        Err(Code::PermissionDenied)
    );
    // No certificate, or one the CA did not sign: the handshake fails and no call reaches the
    // services (whose refusals would be UNAUTHENTICATED or PERMISSION_DENIED).
    let refused = async |client: Option<&(String, String)>| -> Result<(), String> {
        match tls_channel(&grpc, client_config(&ca, client, b"h2")).await {
            Err(_) => Ok(()),
            // A TLS 1.3 client finishes its side before it reads the server's alert, so the
            // connection fails on the first call instead.
            Ok(channel) => match predict(&channel, "half_plus_two", None).await {
                Err(code) if ![Code::Unauthenticated, Code::PermissionDenied].contains(&code) => {
                    Ok(())
                }
                other => Err(format!("the call got through the handshake: {other:?}")),
            },
        }
    };
    refused(None).await.expect("a client with no certificate");
    refused(Some(&stranger))
        .await
        .expect("a certificate another CA signed");
    // Plain text on the TLS port gets nothing.
    let plain = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert_ne!(
            predict(&plain, "half_plus_two", None).await,
            Ok(vec![2.5, 3.0])
        );
    }

    // REST over TLS (HTTP/1.1), the same identity.
    let address = format!("127.0.0.1:{rest_port}");
    let rest_tls = |client| client_config(&ca, client, b"http/1.1");
    let tls = tls_connect(&address, rest_tls(Some(&allowed)))
        .await
        .unwrap();
    let (code, body) = http(
        tls,
        "POST",
        "/v1/models/half_plus_two:predict",
        None,
        r#"{"instances": [1.0, 2.0]}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("2.5"), "{body}");
    let tls = tls_connect(&address, rest_tls(Some(&other_client)))
        .await
        .unwrap();
    let (code, body) = http(tls, "GET", "/v1/models/half_plus_two", None, "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cert:client-b may not call"), "{body}");
    // No certificate: no answer at all.
    if let Ok(mut tls) = tls_connect(&address, rest_tls(None)).await {
        let _ = tls
            .write_all(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        assert!(
            !String::from_utf8_lossy(&answer).starts_with("HTTP/"),
            "{answer:?}"
        );
    }
}

/// A rule for `uid:N` lets that user's calls on the Unix socket through (the kernel says who is
/// calling), for the models and methods it names only; the same calls over TCP carry no identity.
#[tokio::test(flavor = "multi_thread")]
async fn the_unix_socket_peer_is_its_uid() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = two_models(dir.path());
    let uid = rustix::process::getuid().as_raw();
    let policy = dir.path().join("policy.json");
    write_file(
        &policy,
        &format!(
            r#"{{"allow": [
                {{"identity": "uid:{uid}", "models": ["half_plus_two"], "methods": ["Predict"]}},
                {{"identity": "uid:{}", "models": ["other"], "methods": ["*"]}}
            ]}}"#,
            uid + 1
        ),
        0o600,
    );
    let socket = dir.path().join("serve.sock");
    let server = start_serve(&[
        "--model_config_file".as_ref(),
        config_file.as_os_str(),
        "--auth_policy_file".as_ref(),
        policy.as_os_str(),
        "--grpc_socket_path".as_ref(),
        socket.as_os_str(),
    ]);
    let unix = unix_channel(&socket).await;
    assert_eq!(
        predict(&unix, "half_plus_two", None).await,
        Ok(vec![2.5, 3.0])
    );
    assert_eq!(
        predict(&unix, "other", None).await,
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        model_status(&unix, "half_plus_two", None).await,
        Code::PermissionDenied
    );
    let tcp = plain_channel(&server.address("")).await;
    assert_eq!(
        predict(&tcp, "half_plus_two", None).await,
        Err(Code::Unauthenticated)
    );
}

/// Refused at start, before any model loads: listening beyond loopback with no authentication
/// (unless asked), a token file group or others may write, tokens with no policy.
#[test]
fn what_serve_refuses_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &base.join("1"));
    let model: [&std::ffi::OsStr; 2] = ["--model_base_path".as_ref(), base.as_os_str()];

    let stderr = serve_refuses(&[model[0], model[1], "--grpc_address=0.0.0.0".as_ref()]);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 with no authentication"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--allow_unauthenticated_remote"),
        "{stderr}"
    );

    let tokens = dir.path().join("tokens");
    write_file(&tokens, &format!("alice {}\n", sha256_hex("t")), 0o664);
    let policy = dir.path().join("policy.json");
    write_file(&policy, r#"{"allow": []}"#, 0o600);
    let stderr = serve_refuses(&[
        model[0],
        model[1],
        "--auth_tokens_file".as_ref(),
        tokens.as_os_str(),
        "--auth_policy_file".as_ref(),
        policy.as_os_str(),
    ]);
    assert!(
        stderr.contains(&format!(
            "{} is writable by group or others (mode 664)",
            tokens.display()
        )),
        "{stderr}"
    );

    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = serve_refuses(&[
        model[0],
        model[1],
        "--auth_tokens_file".as_ref(),
        tokens.as_os_str(),
    ]);
    assert!(
        stderr.contains("--auth_tokens_file is given without --auth_policy_file"),
        "{stderr}"
    );
}

/// `--allow_unauthenticated_remote` is the one way to an open server beyond loopback: it starts,
/// and answers without credentials, as before this flag existed.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_beyond_loopback_must_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &base.join("1"));
    let server = start_serve(&[
        "--model_name".as_ref(),
        "half_plus_two".as_ref(),
        "--model_base_path".as_ref(),
        base.as_os_str(),
        "--grpc_address=0.0.0.0".as_ref(),
        "--allow_unauthenticated_remote".as_ref(),
    ]);
    let address = server.address("");
    let port = address
        .strip_prefix("0.0.0.0:")
        .unwrap_or_else(|| panic!("listening on every address: {address}"));
    let channel = plain_channel(&format!("127.0.0.1:{port}")).await;
    assert_eq!(
        predict(&channel, "half_plus_two", None).await,
        Ok(vec![2.5, 3.0])
    );
}
