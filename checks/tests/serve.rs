//! `tfsandbox serve` through TensorFlow Serving's own Python client (the PyPI
//! `tensorflow-serving-api` package, set up by scripts/setup-serving-client.sh): Predict,
//! GetModelMetadata, GetModelStatus, error codes, health, reflection, the Unix socket, and a new
//! model version picked up under load with no failed call.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tfsandbox::RuntimeKind;
use tfsandbox_checks::{config, fixture};

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The server process; killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_client(python: &Path, args: &[&str]) {
    let status = Command::new(python)
        .arg(repo_root().join("checks/serve/client.py"))
        .args(args)
        // TensorFlow's start-up chatter would bury the client's own lines.
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .status()
        .expect("run checks/serve/client.py");
    assert!(status.success(), "client.py {} failed: {status}", args[0]);
}

#[test]
fn tensorflow_serving_client_against_tfsandbox_serve() {
    let python = serving_client_python();

    // half_plus_two with versions 1 and 2 (the same model: answers say which version ran them),
    // and string_echo with one version, listed in TensorFlow Serving's model config format.
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    copy_dir(&fixture("half_plus_two"), &half.join("2"));
    let echo = base.path().join("string_echo");
    copy_dir(&fixture("string_echo"), &echo.join("1"));
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{\n  config {{ name: 'half_plus_two' base_path: '{}' model_platform: 'tensorflow' }}\n  config {{ name: 'string_echo' base_path: '{}' }}\n}}\n",
            half.display(),
            echo.display()
        ),
    )
    .unwrap();
    let socket = base.path().join("serve.sock");

    let tfsandbox = config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("the worker is built")
        .with_file_name("tfsandbox");
    let mut child = Command::new(&tfsandbox)
        .args([
            "serve",
            "--port",
            "0",
            "--file_system_poll_wait_seconds",
            "1",
        ])
        .arg("--model_config_file")
        .arg(&config_file)
        .arg("--grpc_socket_path")
        .arg(&socket)
        .args(["--runtime", "process"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tfsandbox serve");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);

    // `listening on ADDRESS` lines come once every model is loaded.
    let (lines, listening) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = line.strip_prefix("listening on ") {
                if lines.send(address.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    let wait = Duration::from_secs(180);
    let tcp = listening
        .recv_timeout(wait)
        .expect("tfsandbox serve listens");
    let unix = listening
        .recv_timeout(wait)
        .expect("tfsandbox serve listens on the socket");
    assert!(tcp.starts_with("127.0.0.1:"), "loopback by default: {tcp}");
    assert_eq!(unix, format!("unix:{}", socket.display()));

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
    drop(server);
}
