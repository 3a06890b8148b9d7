//! Shared pieces of the suites in `tests/`: fixtures, their expected outputs, sandboxes to run them.
//!
//! Every suite starts real workers running real libtensorflow; nothing is mocked.

pub mod escape;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Once;

use serde_json::Value;
use tfsandbox::runtime::{Launch, WorkerControl};
use tfsandbox::{
    tensor, Config, DType, ProcessSettings, RuntimeConfig, RuntimeKind, Sandbox, Tensor,
};
use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tonic::transport::Channel;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// `fixtures/expected.json`: model → signature → {"inputs", "outputs"}, as TensorFlow computed them.
pub fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("fixtures/expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

/// Worker log lines show up in test output when a test fails (RUST_LOG-style `TFSANDBOX_LOG`).
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("TFSANDBOX_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init();
    });
}

/// Every fixture folder, so any of them can be loaded whatever the runtime mounts.
pub fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .expect("fixtures folder")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("saved_model.pb").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// A config for `runtime` that may load every fixture.
pub fn config(runtime: RuntimeKind) -> Config {
    init_logging();
    Config {
        runtime: match runtime {
            RuntimeKind::Process => RuntimeConfig::Process(process_settings()),
            other => other.into(),
        },
        models: fixture_dirs(),
        ..Config::default()
    }
}

/// The process runtime's defaults, with the protections `TFSANDBOX_ALLOW_WEAKER` allows to be
/// missing (the variable `tfsandbox --allow-weaker` reads too, so the command lines the suites
/// start follow it): set only where the machine lacks them, as Nix's build sandbox lacks a
/// cgroup filesystem (nix/nextest.nix).
pub fn process_settings() -> ProcessSettings {
    let allowed = std::env::var("TFSANDBOX_ALLOW_WEAKER").unwrap_or_default();
    ProcessSettings {
        allow_weaker: allowed
            .split(',')
            .filter(|name| !name.is_empty())
            .map(|name| {
                name.parse()
                    .expect("TFSANDBOX_ALLOW_WEAKER names protections")
            })
            .collect(),
        ..ProcessSettings::default()
    }
}

pub async fn sandbox(runtime: RuntimeKind) -> Sandbox {
    Sandbox::start(config(runtime))
        .await
        .expect("sandbox starts")
}

/// Kills the worker from outside, as a crash or the OOM killer would.
pub async fn kill_worker(sandbox: &Sandbox, runtime: RuntimeKind) {
    match runtime {
        RuntimeKind::Process => {
            // Not Info's pid: that one is the worker's own, inside its pid namespace.
            let pid = worker_host_pid(sandbox).expect("the worker's host pid") as i32;
            let pid = rustix::process::Pid::from_raw(pid).expect("a real pid");
            rustix::process::kill_process(pid, rustix::process::Signal::KILL)
                .expect("kill the worker");
        }
        RuntimeKind::Docker => {
            let docker = bollard::Docker::connect_with_local_defaults().expect("engine");
            let options = bollard::query_parameters::KillContainerOptions {
                signal: "SIGKILL".into(),
            };
            docker
                .kill_container(&container_name(sandbox), Some(options))
                .await
                .expect("kill the container");
        }
        RuntimeKind::Gvisor => {
            // The worker inside gVisor's kernel, through runsc's own state for this host.
            let settings = tfsandbox::GvisorSettings::default();
            let state = settings
                .state_dir
                .join(format!("tfsandbox-runsc-{}", std::process::id()));
            let status = std::process::Command::new(&settings.runsc_path)
                .arg(format!("--root={}", state.display()))
                .args(["kill", &container_name(sandbox), "KILL"])
                .status()
                .expect("runsc kill runs");
            assert!(status.success(), "runsc kill: {status}");
        }
    }
}

/// The worker's pid on the host, for the `process` runtime: the one child of the jailer's one
/// child (the sandbox's pid 1).
pub fn worker_host_pid(sandbox: &Sandbox) -> Option<u32> {
    let init = only_child(sandbox.host_pid()?)?;
    only_child(init)
}

/// The first child of `pid`.
pub fn only_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// For a program run in the worker's place: the protocol FIFOs the host names, opened as the
/// worker opens them and made fds 0 and 1, so it speaks on stdin/stdout on every runtime. Exits
/// with 2, naming the FIFO, where one does not open.
pub fn protocol_on_stdio() {
    let moved = match tfsandbox_proto::open_protocol_fifos() {
        Ok(Some((input, output))) => rustix::stdio::dup2_stdin(&input)
            .and_then(|()| rustix::stdio::dup2_stdout(&output))
            .map_err(|e| format!("moving the protocol FIFOs onto fds 0 and 1: {e}")),
        Ok(None) => Ok(()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(message) = moved {
        eprintln!("{message}");
        std::process::exit(2);
    }
}

/// The `tfsandbox` command beside the worker that `config` finds.
pub fn tfsandbox() -> PathBuf {
    config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("the worker is built")
        .with_file_name("tfsandbox")
}

/// The jailer beside the worker that `config` finds, for tests that start another program.
pub fn jailer_path() -> PathBuf {
    config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built")
        .with_file_name("tfsandbox-jailer")
}

/// The container of a sandbox of the docker or gvisor runtime.
pub fn container_name(sandbox: &Sandbox) -> String {
    format!("tfsandbox-{}-w{}", sandbox.id(), sandbox.generation())
}

/// Runs each named `async fn(RuntimeKind)` as one test per runtime: `process::name`,
/// `docker::name`, `gvisor::name`.
#[macro_export]
macro_rules! each_runtime {
    ($($name:ident),* $(,)?) => {
        mod process {
            $(#[tokio::test]
            async fn $name() {
                super::$name(tfsandbox::RuntimeKind::Process).await
            })*
        }
        mod docker {
            $(#[tokio::test]
            async fn $name() {
                super::$name(tfsandbox::RuntimeKind::Docker).await
            })*
        }
        mod gvisor {
            $(#[tokio::test]
            async fn $name() {
                super::$name(tfsandbox::RuntimeKind::Gvisor).await
            })*
        }
    };
}

/// A tensor from an expected.json entry: {"dtype", "shape", "values" (flat)}.
pub fn tensor_from_spec(spec: &Value) -> Tensor {
    let dtype = dtype_named(spec["dtype"].as_str().expect("dtype"));
    let shape: Vec<usize> = spec["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dimension") as usize)
        .collect();
    let values = spec["values"].as_array().expect("values").clone();
    tensor::from_json(&nest(&mut values.into_iter(), &shape), dtype)
        .expect("spec is a valid tensor")
}

/// Asserts `actual` equals an expected.json entry; floats to a relative 1e-6.
pub fn assert_tensor_matches(actual: &Tensor, spec: &Value, what: &str) {
    assert_eq!(
        actual.dtype().to_string(),
        spec["dtype"].as_str().unwrap(),
        "{what}: dtype"
    );
    let shape: Vec<usize> = spec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(actual.shape(), shape, "{what}: shape");
    let got = flatten(&tensor::to_json(actual));
    let want = spec["values"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: element count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match (g.as_f64(), w.as_f64(), actual.dtype()) {
            (Some(g), Some(w), DType::Float32 | DType::Float64) => {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{what}[{i}]: {g} != {w}"
                )
            }
            _ => assert_eq!(g, w, "{what}[{i}]"),
        }
    }
}

fn dtype_named(name: &str) -> DType {
    [
        DType::Float32,
        DType::Float64,
        DType::Int32,
        DType::Int64,
        DType::Uint8,
        DType::Bool,
        DType::String,
    ]
    .into_iter()
    .find(|d| d.to_string() == name)
    .unwrap_or_else(|| panic!("unknown dtype {name}"))
}

fn nest(values: &mut impl Iterator<Item = Value>, shape: &[usize]) -> Value {
    match shape.split_first() {
        None => values.next().expect("enough values"),
        Some((&n, rest)) => Value::Array((0..n).map(|_| nest(values, rest)).collect()),
    }
}

fn flatten(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        leaf => vec![leaf.clone()],
    }
}

/// Copies the folder `from` to `to`, recursively (a fixture into a model base path, say).
pub fn copy_dir(from: &Path, to: &Path) {
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

/// Where a sandbox sees fixture `name` (every fixture is mounted by `config`).
pub fn fixture_inside(name: &str) -> String {
    format!("/models/{name}")
}

/// A worker spoken to with the bare generated client, for requests the library never sends
/// (malformed tensors, unknown ids). The control kills it when dropped.
pub async fn raw_worker() -> (WorkerClient<Channel>, Box<dyn WorkerControl>) {
    let config = config(RuntimeKind::Process);
    let launch = Launch {
        sandbox_id: "raw".into(),
        worker_path: config.resolve_worker_path().expect("worker built"),
        worker_log: "info".into(),
        max_message_bytes: tfsandbox::Config::default().max_message_bytes,
        session: Default::default(),
        start_timeout: tfsandbox::Config::default().start_timeout,
    };
    let runtime = tfsandbox::runtime::for_config(&config)
        .await
        .expect("the runtime");
    let mut worker = runtime.start(&launch).await.expect("worker starts");
    // Drained, so the worker never writes into a full or closed pipe.
    tokio::spawn(async move { tokio::io::copy(&mut worker.stderr, &mut tokio::io::sink()).await });
    let (channel, _driver) = transport::connect(worker.stdout, worker.stdin)
        .await
        .expect("transport");
    (WorkerClient::new(channel), worker.control)
}
