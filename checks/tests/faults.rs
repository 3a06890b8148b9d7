//! Workers that are missing, die at start, speak something else, or are killed mid-call.

use std::time::{Duration, Instant};

use tfsandbox::{Config, Error, Sandbox, Tensor};
use tfsandbox_checks::{config, fixture, sandbox};

#[tokio::test]
async fn a_missing_worker_binary_says_where_it_looked() {
    let config = Config {
        worker_path: Some("/nonexistent/tfsandbox-worker".into()),
        ..config()
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
        ..config()
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
        ..config()
    };
    let error = tokio::time::timeout(Duration::from_secs(30), Sandbox::start(config))
        .await
        .expect("start gives up by itself")
        .err()
        .unwrap();
    assert!(!error.to_string().is_empty());
}

#[tokio::test]
async fn killing_the_worker_mid_call_fails_the_call_promptly() {
    let sandbox = sandbox().await;
    let model = sandbox.load_model(fixture("busy_loop")).await.unwrap();
    let pid = sandbox.info().await.unwrap().pid as i32;
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
    let target = rustix::process::Pid::from_raw(pid).expect("a real pid");
    rustix::process::kill_process(target, rustix::process::Signal::KILL).expect("kill the worker");
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

#[tokio::test]
async fn dropping_the_sandbox_leaves_no_worker_behind() {
    let sandbox = sandbox().await;
    let pid = sandbox.info().await.unwrap().pid;
    let proc_dir = format!("/proc/{pid}");
    assert!(std::path::Path::new(&proc_dir).exists());
    let status = sandbox.shutdown().await;
    assert!(status.contains("signal: 9"), "{status}");
    // Reaped, not a zombie: the pid is gone entirely.
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "worker {pid} still exists"
    );
}
