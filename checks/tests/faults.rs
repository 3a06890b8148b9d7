//! Workers that are missing, die at start, speak something else, or are killed mid-call.

use std::time::{Duration, Instant};

use tfsandbox::{Config, Error, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, container_name, each_runtime, fixture, kill_worker, sandbox};

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
    // Later calls fail the same way, at once.
    let again = model
        .predict([("n", Tensor::scalar(1i64))])
        .await
        .unwrap_err();
    assert!(matches!(again, Error::WorkerExited { .. }), "{again}");
}

async fn dropping_the_sandbox_leaves_no_worker_behind(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let pid = sandbox.info().await.unwrap().pid;
    let container = container_name(&sandbox);
    let status = sandbox.shutdown().await;
    assert!(status.contains("signal: 9"), "{status}");
    match runtime {
        // Reaped, not a zombie: the pid is gone entirely.
        RuntimeKind::Process => assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} still exists"
        ),
        RuntimeKind::Docker => {
            let docker = bollard::Docker::connect_with_local_defaults().unwrap();
            let gone = docker.inspect_container(&container, None).await.is_err();
            assert!(gone, "container {container} still exists");
        }
    }
}

each_runtime!(
    killing_the_worker_mid_call_fails_the_call_promptly,
    dropping_the_sandbox_leaves_no_worker_behind,
);
