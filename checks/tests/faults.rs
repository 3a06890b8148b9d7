//! Workers that are missing, die at start, speak something else, or are killed mid-call.

use std::time::{Duration, Instant};

use tfsandbox::{Config, Error, ProcessSettings, RuntimeConfig, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{
    config, container_name, each_runtime, fixture, jailer_path, kill_worker, sandbox,
    worker_host_pid,
};

#[tokio::test]
async fn a_missing_worker_binary_says_where_it_looked() {
    let config = Config {
        worker_path: Some("/nonexistent/tfsandbox-worker".into()),
        ..config(RuntimeKind::Process)
    };
    let error = Sandbox::start(config).await.err().unwrap();
    assert!(matches!(error, Error::WorkerNotFound { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/tfsandbox-worker"),
        "{error}"
    );
}

#[tokio::test]
async fn a_worker_that_exits_at_start_is_reported_with_its_status() {
    let config = Config {
        worker_path: Some("/bin/false".into()),
        runtime: RuntimeConfig::Process(ProcessSettings {
            jailer_path: Some(jailer_path()),
            ..tfsandbox_checks::process_settings()
        }),
        ..config(RuntimeKind::Process)
    };
    let error = Sandbox::start(config).await.err().unwrap();
    assert!(matches!(error, Error::WorkerExited { .. }), "{error}");
    assert!(error.to_string().contains("exit status: 1"), "{error}");
}

#[tokio::test]
async fn a_worker_that_speaks_no_protocol_fails_the_start_without_hanging() {
    // `cat` echoes our own bytes back: a peer that answers, but with nonsense.
    let config = Config {
        worker_path: Some("/bin/cat".into()),
        runtime: RuntimeConfig::Process(ProcessSettings {
            jailer_path: Some(jailer_path()),
            ..tfsandbox_checks::process_settings()
        }),
        start_timeout: Duration::from_secs(10),
        ..config(RuntimeKind::Process)
    };
    let error = tokio::time::timeout(Duration::from_secs(30), Sandbox::start(config))
        .await
        .expect("start gives up by itself")
        .err()
        .unwrap();
    assert!(!error.to_string().is_empty());
}

async fn killing_the_worker_mid_call_fails_the_call_promptly(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("busy_loop")).await.unwrap();
    let call = tokio::spawn({
        let model = model.clone();
        async move {
            model
                .predict([("n", Tensor::scalar(1_000_000_000_000i64))])
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!call.is_finished(), "the endless loop returned");
    let killed = Instant::now();
    kill_worker(&sandbox, runtime).await;
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call fails instead of hanging")
        .unwrap()
        .unwrap_err();
    let waited = killed.elapsed();
    assert!(matches!(error, Error::WorkerExited { .. }), "{error}");
    assert!(error.to_string().contains("signal: 9"), "{error}");
    println!("call failed {waited:?} after the kill");
}

async fn dropping_the_sandbox_leaves_no_worker_behind(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let pids = [sandbox.host_pid(), worker_host_pid(&sandbox)];
    let container = container_name(&sandbox);
    let status = sandbox.shutdown().await;
    assert!(status.contains("signal: 9"), "{status}");
    match runtime {
        // Reaped, not a zombie: the pid is gone entirely.
        RuntimeKind::Process => {
            // The jailer is reaped by the host; the worker, killed with it, by init: allow it a moment.
            for pid in pids {
                let proc = format!("/proc/{}", pid.expect("a host pid"));
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::path::Path::new(&proc).exists() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert!(!std::path::Path::new(&proc).exists(), "{proc} still exists");
            }
        }
        RuntimeKind::Docker => {
            let docker = bollard::Docker::connect_with_local_defaults().unwrap();
            let gone = docker.inspect_container(&container, None).await.is_err();
            assert!(gone, "container {container} still exists");
        }
        // runsc run (the host's child) is reaped, and no runsc process of this host is left.
        RuntimeKind::Gvisor => {
            let proc = format!("/proc/{}", pids[0].expect("runsc run's pid"));
            assert!(!std::path::Path::new(&proc).exists(), "{proc} still exists");
            let root = tfsandbox::runtime::gvisor::root_argument(&Default::default());
            let deadline = Instant::now() + Duration::from_secs(5);
            let ours = || {
                std::fs::read_dir("/proc")
                    .unwrap()
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|pid| {
                        std::fs::read(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == root.as_bytes()))
                    })
                    .count()
            };
            while ours() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(ours(), 0, "runsc processes of {container} are left");
        }
    }
}

each_runtime!(
    killing_the_worker_mid_call_fails_the_call_promptly,
    dropping_the_sandbox_leaves_no_worker_behind,
);
