//! `tfsandbox serve` through TensorFlow Serving's own Python client (the PyPI
//! `tensorflow-serving-api` package, set up by scripts/setup-serving-client.sh): Predict,
//! GetModelMetadata, GetModelStatus, error codes, health, reflection, the Unix socket, and a new
//! model version picked up under load with no failed call.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tfsandbox::RuntimeKind;
use tfsandbox_checks::serve::Serve;
use tfsandbox_checks::tfsandbox;
use tfsandbox_checks::{copy_dir, fixture};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ has a parent")
        .to_path_buf()
}

/// The venv's Python, set up first if it is not there yet (the script keeps a finished one).
fn serving_client_python() -> PathBuf {
    let root = repo_root();
    let status = Command::new(root.join("scripts/setup-serving-client.sh"))
        .status()
        .expect("run scripts/setup-serving-client.sh");
    assert!(
        status.success(),
        "scripts/setup-serving-client.sh failed: {status}"
    );
    root.join(".cache/serving-venv/bin/python")
}

/// Runs `checks/serve/<script>` with the venv's Python; it must succeed.
fn run_script(python: &Path, script: &str, args: &[&str]) {
    let status = Command::new(python)
        .arg(repo_root().join("checks/serve").join(script))
        .args(args)
        // TensorFlow's start-up chatter would bury the script's own lines.
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .status()
        .unwrap_or_else(|e| panic!("run checks/serve/{script}: {e}"));
    assert!(status.success(), "{script} {} failed: {status}", args[0]);
}

fn run_client(python: &Path, args: &[&str]) {
    run_script(python, "client.py", args);
}

#[test]
fn tensorflow_serving_client_against_tfsandbox_serve() {
    client_against(RuntimeKind::Process, true);
}

/// The same calls and answers (typed answer fields, metadata, status codes, Classify, Regress,
/// MultiInference, the Unix socket) on the docker runtime; the version switch under load runs on
/// the process runtime only.
#[test]
fn tensorflow_serving_client_against_tfsandbox_serve_docker() {
    client_against(RuntimeKind::Docker, false);
}

fn client_against(runtime: RuntimeKind, switch: bool) {
    let python = serving_client_python();

    // half_plus_two with versions 1 and 2 (the same model: answers say which version ran them),
    // string_echo with one version, and half_plus_two_all serving both its versions, listed in
    // TensorFlow Serving's model config format.
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    copy_dir(&fixture("half_plus_two"), &half.join("2"));
    let echo = base.path().join("string_echo");
    copy_dir(&fixture("string_echo"), &echo.join("1"));
    // The same two versions again, every one served.
    let all = base.path().join("half_plus_two_all");
    copy_dir(&half.join("1"), &all.join("1"));
    copy_dir(&half.join("2"), &all.join("2"));
    // A model with classify and regress signatures, made now by the venv's TensorFlow.
    let classifier = base.path().join("classifier");
    let status = Command::new(&python)
        .arg(repo_root().join("checks/serve/make_classifier.py"))
        .arg(classifier.join("1"))
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .status()
        .expect("run checks/serve/make_classifier.py");
    assert!(status.success(), "make_classifier.py failed: {status}");
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{\n  config {{ name: 'half_plus_two' base_path: '{}' model_platform: 'tensorflow' }}\n  config {{ name: 'string_echo' base_path: '{}' }}\n  config {{ name: 'half_plus_two_all' base_path: '{}' model_version_policy {{ all {{}} }} }}\n  config {{ name: 'classifier' base_path: '{}' }}\n}}\n",
            half.display(),
            echo.display(),
            all.display(),
            classifier.display()
        ),
    )
    .unwrap();
    let socket = base.path().join("serve.sock");

    let (server, listening) = start_serve_on(
        runtime,
        &[
            "--model_config_file".as_ref(),
            config_file.as_os_str(),
            "--grpc_socket_path".as_ref(),
            socket.as_os_str(),
            // Both off by default, as in TensorFlow Serving; the client checks them.
            "--enable_grpc_healthcheck_service".as_ref(),
            "--enable_signature_method_name_check=true".as_ref(),
        ],
    );
    let [tcp, unix] = &listening[..] else {
        panic!("expected a TCP and a Unix listener: {listening:?}");
    };
    let tcp = tcp.clone();
    assert!(tcp.starts_with("127.0.0.1:"), "loopback by default: {tcp}");
    assert_eq!(*unix, format!("unix:{}", socket.display()));

    run_client(
        &python,
        &[
            "basic",
            "--address",
            &tcp,
            "--unix-socket",
            &socket.display().to_string(),
        ],
    );
    if switch {
        run_client(
            &python,
            &[
                "switch",
                "--address",
                &tcp,
                "--base",
                &half.display().to_string(),
                "--source",
                &fixture("half_plus_two").display().to_string(),
                "--new-version",
                "3",
            ],
        );
    }
    server.stop();
    assert!(
        !socket.exists(),
        "the socket file is removed on the way out"
    );
}

/// The served models replaced while serving: by ModelService.HandleReloadConfigRequest from TF
/// Serving's client, then by rewriting the config file the server polls
/// (`--model_config_file_poll_wait_seconds`), as TensorFlow Serving's testModelConfigReload does.
#[test]
fn config_reload() {
    config_reload_on(RuntimeKind::Process);
}

#[test]
fn config_reload_docker() {
    config_reload_on(RuntimeKind::Docker);
}

fn config_reload_on(runtime: RuntimeKind) {
    let python = serving_client_python();
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    copy_dir(&fixture("half_plus_two"), &half.join("2"));
    copy_dir(
        &fixture("string_echo"),
        &base.path().join("string_echo").join("1"),
    );
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{ config {{ name: 'half_plus_two' base_path: '{}' }} }}\n",
            half.display()
        ),
    )
    .unwrap();
    let (server, listening) = start_serve_on(
        runtime,
        &[
            "--model_config_file".as_ref(),
            config_file.as_os_str(),
            "--model_config_file_poll_wait_seconds=1".as_ref(),
        ],
    );
    run_client(
        &python,
        &[
            "reload",
            "--address",
            &listening[0],
            "--base",
            &base.path().display().to_string(),
            "--config-file",
            &config_file.display().to_string(),
            "--timeout",
            "60",
        ],
    );
    server.stop();
}

/// Warmup as TensorFlow Serving does it (`--enable_model_warmup`, on by default): each version's
/// assets.extra/tf_serving_warmup_requests, written by TensorFlow's own TFRecordWriter, is
/// replayed `--num_request_iterations_for_warmup` times before the version serves; a warmup that
/// fails (a log kind not replayed, a bad request) fails that version alone.
#[test]
fn warmup() {
    warmup_on(RuntimeKind::Process);
}

#[test]
fn warmup_docker() {
    warmup_on(RuntimeKind::Docker);
}

fn warmup_on(runtime: RuntimeKind) {
    let python = serving_client_python();
    let base = tempfile::tempdir().unwrap();
    let counter = base.path().join("counter");
    for (version, kind) in [("1", "counter"), ("2", "session_run"), ("3", "bad_input")] {
        let dir = counter.join(version);
        copy_dir(&fixture("stateful_counter"), &dir);
        std::fs::create_dir_all(dir.join("assets.extra")).unwrap();
        let file = dir.join("assets.extra/tf_serving_warmup_requests");
        run_script(
            &python,
            "warmup.py",
            &["write", &file.display().to_string(), kind],
        );
    }
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{ config {{ name: 'counter' base_path: '{}' model_version_policy {{ all {{}} }} }} }}\n",
            counter.display()
        ),
    )
    .unwrap();
    let check = |extra: &str, count: &str, failures: [&str; 2]| {
        let (server, listening) = start_serve_on(
            runtime,
            &[
                "--model_config_file".as_ref(),
                config_file.as_os_str(),
                extra.as_ref(),
            ],
        );
        let address = &listening[0];
        let common = ["--address", address, "--model", "counter"];
        run_script(
            &python,
            "warmup.py",
            &[
                &["peek"][..],
                &common,
                &["--version", "1", "--expect", count],
            ]
            .concat(),
        );
        for (version, error) in ["2", "3"].into_iter().zip(failures) {
            run_script(
                &python,
                "warmup.py",
                &[
                    &["status"][..],
                    &common,
                    &["--version", version, "--error", error],
                ]
                .concat(),
            );
        }
        server.stop();
    };
    // Twice 5, added by warmup alone; versions 2 and 3 fail theirs, and only they.
    check(
        "--num_request_iterations_for_warmup=2",
        "10",
        [
            "Unsupported log_type for warmup: session_run_log",
            "input 'nope' is not an input of signature",
        ],
    );
    check("--enable_model_warmup=false", "0", ["", ""]);
}

/// Batching (`--enable_batching`, `--batching_parameters_file` in TensorFlow Serving's format):
/// concurrent Predicts (and Regresses) cross into the sandbox as one run (each caller sees the rows of the run
/// that answered it, and gets its own answer back), a batch is cut at `max_batch_size` rows and
/// at the bytes one request may hold (`--max_request_bytes`), and a request the model refuses
/// fails alone while its batch-mates are answered; a version's own `batching_params.pbtxt` is
/// taken with `--enable_per_model_batching_parameters`.
#[test]
fn batching() {
    batching_on(RuntimeKind::Process);
}

#[test]
fn batching_docker() {
    batching_on(RuntimeKind::Docker);
}

fn batching_on(runtime: RuntimeKind) {
    let python = serving_client_python();
    let base = tempfile::tempdir().unwrap();
    let rows = base.path().join("rows");
    run_script(
        &python,
        "batching.py",
        &["model", &rows.join("1").display().to_string()],
    );
    let parameters = base.path().join("batching.config");
    // A long timeout: the callers all arrive within it, and a full batch runs at once anyway.
    std::fs::write(
        &parameters,
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000000 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n",
    )
    .unwrap();
    let serve = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--model_name=rows".as_ref(),
            "--model_base_path".as_ref(),
            rows.as_os_str(),
            "--enable_batching".as_ref(),
            "--batching_parameters_file".as_ref(),
            parameters.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        start_serve_on(runtime, &args)
    };
    let call_with = |address: &str, max_rows: &str, negative: Option<&str>, regress: bool| {
        let mut args = vec![
            "call",
            "--address",
            address,
            "--callers",
            "8",
            "--max-rows",
            max_rows,
        ];
        if let Some(k) = negative {
            args.extend(["--negative", k]);
        }
        if regress {
            args.push("--regress");
        }
        run_script(&python, "batching.py", &args);
    };
    let call = |address: &str, max_rows: &str, negative: Option<&str>| {
        call_with(address, max_rows, negative, false)
    };
    let (server, listening) = serve(&[]);
    // Eight callers, one run of eight rows.
    call(&listening[0], "8", None);
    // One of them refused by the model: it alone fails; the others are each answered alone.
    call(&listening[0], "1", Some("3"));
    // Regress is batched too: eight one-Example calls, one run of eight Examples.
    call_with(&listening[0], "8", None, true);
    server.stop();
    // A request of one float holds 4 bytes: at 16 bytes a request, a batch holds four.
    let (server, listening) = serve(&["--max_request_bytes=16"]);
    call(&listening[0], "4", None);
    server.stop();
    // The version's own parameters, in place of the file's (--enable_per_model_batching_parameters).
    std::fs::write(
        rows.join("1/batching_params.pbtxt"),
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 2000000 }\n",
    )
    .unwrap();
    let (server, listening) = serve(&["--enable_per_model_batching_parameters"]);
    call(&listening[0], "2", None);
    server.stop();
}

/// Starts `tfsandbox serve` on a free loopback port with `args`; returns it with the addresses of
/// its `listening on` lines, which come once every model is loaded.
fn start_serve(args: &[&std::ffi::OsStr]) -> (Serve, Vec<String>) {
    start_serve_on(RuntimeKind::Process, args)
}

/// [`start_serve`] on `runtime`.
fn start_serve_on(runtime: RuntimeKind, args: &[&std::ffi::OsStr]) -> (Serve, Vec<String>) {
    let server = Serve::start(Serve::command(runtime, 1, args));
    let addresses = server.listening.clone();
    (server, addresses)
}

/// TLS on the TCP port, with a certificate made here; a plain-text client is refused.
#[test]
fn tls() {
    let python = serving_client_python();
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = base.path().join("cert.pem");
    std::fs::write(&cert, key.cert.pem()).unwrap();
    let key_file = base.path().join("key.pem");
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();

    let (server, listening) = start_serve(&[
        "--model_name".as_ref(),
        "half_plus_two".as_ref(),
        "--model_base_path".as_ref(),
        half.as_os_str(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key_file.as_os_str(),
    ]);
    run_client(
        &python,
        &[
            "tls",
            "--address",
            &listening[0],
            "--root-cert",
            &cert.display().to_string(),
        ],
    );
    server.stop();
}

/// Mutual TLS and the policy through TensorFlow Serving's Python client, as its users would call:
/// a client certificate (`grpc.ssl_channel_credentials`), a bearer token as call credentials and
/// as metadata, and the Unix socket's uid; UNAUTHENTICATED and PERMISSION_DENIED where refused.
#[test]
fn authentication_with_tensorflow_servings_client() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    use std::os::unix::fs::PermissionsExt;
    let python = serving_client_python();
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let issue = |names: Vec<String>, cn: &str, usage| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(
        vec!["localhost".to_string()],
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        issue(Vec::new(), "client-a", ExtendedKeyUsagePurpose::ClientAuth);
    let file = |name: &str, text: &str| {
        let path = base.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let ca_file = file("ca.pem", &ca.pem());
    let client_cert = file("client.pem", &client_cert);
    let client_key = file("client.key", &client_key);
    let ssl_config = file(
        "ssl.config",
        &format!(
            "server_key: {server_key:?}\nserver_cert: {server_cert:?}\ncustom_ca: {:?}\nclient_verify: true\n",
            ca.pem()
        ),
    );
    let token = "a-token-for-the-python-client";
    let tokens = {
        use std::fmt::Write;
        let digest = {
            // As the README tells an operator to: `printf %s TOKEN | sha256sum`.
            let output = Command::new("sha256sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write;
                    child.stdin.take().unwrap().write_all(token.as_bytes())?;
                    child.wait_with_output()
                })
                .expect("run sha256sum");
            String::from_utf8(output.stdout).unwrap()[..64].to_string()
        };
        let mut text = String::new();
        writeln!(text, "python-client {digest}").unwrap();
        file("tokens", &text)
    };
    let uid = rustix::process::getuid().as_raw();
    let policy = file(
        "policy.json",
        &format!(
            r#"{{"allow": [
                {{"identity": "cert:client-a", "models": ["half_plus_two"], "methods": ["Predict"]}},
                {{"identity": "python-client", "models": ["half_plus_two"], "methods": ["GetModelStatus"]}},
                {{"identity": "uid:{uid}", "models": ["half_plus_two"], "methods": ["GetModelMetadata"]}}
            ]}}"#
        ),
    );
    let socket = base.path().join("serve.sock");
    let (server, listening) = start_serve(&[
        "--model_name".as_ref(),
        "half_plus_two".as_ref(),
        "--model_base_path".as_ref(),
        half.as_os_str(),
        format!("--ssl_config_file={}", ssl_config.display()).as_ref(),
        "--auth_tokens_file".as_ref(),
        tokens.as_os_str(),
        "--auth_policy_file".as_ref(),
        policy.as_os_str(),
        "--grpc_socket_path".as_ref(),
        socket.as_os_str(),
    ]);
    let path = |p: &Path| p.display().to_string();
    run_client(
        &python,
        &[
            "auth",
            "--address",
            &listening[0],
            "--unix-socket",
            &path(&socket),
            "--root-cert",
            &path(&ca_file),
            "--client-cert",
            &path(&client_cert),
            "--client-key",
            &path(&client_key),
            "--token",
            token,
        ],
    );
    server.stop();
}

/// The REST API (`--rest_api_port`) with plain HTTP requests: the requests and answers of
/// TensorFlow Serving's own REST tests on its `saved_model_half_plus_two_cpu` (used in place from
/// its testdata), and bad input getting its status and message while the server keeps serving.
#[test]
fn rest_api() {
    rest_api_on(RuntimeKind::Process);
}

/// The same on the docker runtime: every version in its own container.
#[test]
fn rest_api_docker() {
    rest_api_on(RuntimeKind::Docker);
}

fn rest_api_on(runtime: RuntimeKind) {
    let testdata = repo_root().join("../shared/tfserving-testdata");
    // A free port for the REST API (0 there means none, as in TensorFlow Serving).
    let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // With a version label, which REST's /labels/L asks for.
    let base = tempfile::tempdir().unwrap();
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{ config {{ name: 'default' base_path: '{}' model_platform: 'tensorflow' version_labels {{ key: 'stable' value: 123 }} }} }}\n",
            testdata.join("saved_model_half_plus_two_cpu").display()
        ),
    )
    .unwrap();
    let monitoring = base.path().join("monitoring.config");
    std::fs::write(&monitoring, "prometheus_config { enable: true }\n").unwrap();
    let (server, listening) = start_serve_on(
        runtime,
        &[
            format!("--model_config_file={}", config_file.display()).as_ref(),
            format!("--monitoring_config_file={}", monitoring.display()).as_ref(),
            "--rest_api_enable_cors_support".as_ref(),
            format!("--rest_api_port={rest_port}").as_ref(),
            "--rest_api_timeout_in_ms=60000".as_ref(),
            // A small bound, so a body past it is cheap to send: 1 MiB / 32 for REST bodies.
            "--max_request_bytes=1048576".as_ref(),
        ],
    );
    let rest = format!("http://127.0.0.1:{rest_port}");
    assert!(listening.contains(&rest), "{listening:?}");
    let status = Command::new("python3")
        .arg(repo_root().join("checks/serve/rest_client.py"))
        .arg(&rest)
        .arg(testdata.join("half_plus_two_model_metadata.json"))
        .status()
        .expect("run checks/serve/rest_client.py");
    assert!(status.success(), "rest_client.py failed: {status}");
    server.stop();
}

/// TensorFlow's session options as TensorFlow Serving takes them, reaching the worker: a
/// function marked for XLA (`jit_compile`) fails with TensorFlow's "XLA compilation disabled"
/// unless `--xla_cpu_compilation_enabled` is given, and a `--tensorflow_session_config_file`
/// with `--mixed_precision` is taken by the worker's TensorFlow.
#[test]
fn session_options() {
    session_options_on(RuntimeKind::Process);
}

#[test]
fn session_options_docker() {
    session_options_on(RuntimeKind::Docker);
}

fn session_options_on(runtime: RuntimeKind) {
    let base = tempfile::tempdir().unwrap();
    let session_config = base.path().join("session.config");
    std::fs::write(
        &session_config,
        "allow_soft_placement: true\ngraph_options { optimizer_options { opt_level: L0 } }\n",
    )
    .unwrap();
    let predict = |extra: &[&str]| -> String {
        let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut args = vec![
            format!("--model_base_path={}", fixture("xla_jit").display()),
            format!("--rest_api_port={rest_port}"),
            format!(
                "--tensorflow_session_config_file={}",
                session_config.display()
            ),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (server, _) = start_serve_on(runtime, &args);
        let body = r#"{"instances": [1.0, 2.5]}"#;
        let mut http = std::net::TcpStream::connect(("127.0.0.1", rest_port)).unwrap();
        std::io::Write::write_all(
            &mut http,
            format!(
                "POST /v1/models/default:predict HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut http, &mut answer).unwrap();
        server.stop();
        answer
    };
    let refused = predict(&[]);
    assert!(refused.starts_with("HTTP/1.1 500"), "{refused}");
    assert!(refused.contains("XLA compilation disabled"), "{refused}");
    let answered = predict(&[
        "--xla_cpu_compilation_enabled",
        "--mixed_precision=bfloat16",
    ]);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let body = &answered[answered.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body["predictions"],
        serde_json::json!([3.0, 6.0]),
        "{answered}"
    );
}

/// What `tfsandbox serve` prints on stderr, and whether it succeeded, when started with `args`
/// and no model is expected to load.
fn serve_refuses(args: &[&str]) -> String {
    let output = Command::new(tfsandbox())
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tfsandbox serve");
    assert!(
        !output.status.success(),
        "tfsandbox serve {args:?} should have failed"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// tensorflow_model_server's command lines: a bad config file gets TensorFlow Serving's text and
/// the process ends; flags not done here are refused by name with their reason, before anything
/// is loaded or bound.
#[test]
fn tensorflow_model_server_command_lines() {
    let bad = repo_root().join("../shared/tfserving-testdata/bad_model_config.txt");
    let stderr = serve_refuses(&[&format!("--model_config_file={}", bad.display())]);
    assert!(
        stderr.contains("Error parsing text-format tensorflow.serving.ModelServerConfig"),
        "{stderr}"
    );

    let model = format!("--model_base_path={}", fixture("half_plus_two").display());
    let stderr = serve_refuses(&[
        &model,
        "--port=0",
        "--prefer_tflite_model=true",
        "--thread_pool_factory_config_file=/etc/pools.config",
        "--use_alts_credentials=true",
    ]);
    for expected in [
        "--prefer_tflite_model: not supported: the sandbox's worker runs TensorFlow SavedModels, not TensorFlow Lite",
        "--thread_pool_factory_config_file: not supported: it names a thread pool factory compiled into a TensorFlow Serving build",
        "--use_alts_credentials: not supported: ALTS",
    ] {
        assert!(stderr.contains(expected), "expected '{expected}' in: {stderr}");
    }
    let stderr = serve_refuses(&[
        &model,
        "--grpc_channel_arguments=grpc.so_reuseaddr=1,grpc.http2.max_frame_size=5",
    ]);
    assert!(
        stderr.contains("grpc.http2.max_frame_size: not supported yet"),
        "{stderr}"
    );
    // A label may only name a version that is served, as in TensorFlow Serving.
    let base = tempfile::tempdir().unwrap();
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{ config {{ name: 'm' base_path: '{}' version_labels {{ key: 'stable' value: 9 }} }} }}\n",
            repo_root()
                .join("../shared/tfserving-testdata/saved_model_half_plus_two_cpu")
                .display()
        ),
    )
    .unwrap();
    let stderr = serve_refuses(&[
        &format!("--model_config_file={}", config_file.display()),
        "--port=0",
        "--runtime=process",
    ]);
    assert!(
        stderr.contains("Request to assign label to version 9 of model m, which is not currently available for inference"),
        "{stderr}"
    );
    // A session config tfsandbox cannot follow whole is refused by field, in protobuf's words.
    let session_config = base.path().join("session.config");
    std::fs::write(&session_config, "rpc_options { compression_level: 1 }\n").unwrap();
    let stderr = serve_refuses(&[
        &model,
        &format!(
            "--tensorflow_session_config_file={}",
            session_config.display()
        ),
    ]);
    assert!(
        stderr.contains("Error parsing text-format tensorflow.ConfigProto: rpc_options: not a field tfsandbox serve supports"),
        "{stderr}"
    );
    // TensorFlow Serving's words for a batching file without batching.
    let stderr = serve_refuses(&[&model, "--batching_parameters_file=/nonexistent"]);
    assert!(
        stderr.contains("server_options.batching_parameters_file is set without setting server_options.enable_batching to true."),
        "{stderr}"
    );
    let stderr = serve_refuses(&[&model, "--enable_batching=maybe"]);
    assert!(
        stderr.contains("'maybe' is not true, false, 1 or 0"),
        "{stderr}"
    );
}
