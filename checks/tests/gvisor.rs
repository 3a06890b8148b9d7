//! The `gvisor` runtime: real workers under a real `runsc`, with real libtensorflow and fixtures.
//!
//! A suite of its own rather than a column of `each_runtime!`: each gvisor start costs seconds on
//! the ptrace platform, and these few checks bound what it adds to CI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tfsandbox::{GvisorSettings, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, container_name, fixture, kill_worker};

fn x(values: &[f32]) -> [(&'static str, Tensor); 1] {
    [("x", Tensor::new(&[values.len(), 1], values).unwrap())]
}

/// This host process's runsc state folder.
fn state() -> PathBuf {
    GvisorSettings::default()
        .state_dir
        .join(format!("tfsandbox-runsc-{}", std::process::id()))
}

/// The containers runsc holds for this host process.
fn runsc_containers() -> Vec<String> {
    let out = std::process::Command::new("runsc")
        .arg(format!("--root={}", state().display()))
        .args(["list", "--quiet"])
        .output()
        .expect("runsc list runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn cgroup(controller: &str, id: &str, file: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("tfsandbox")
        .join(id)
        .join(file)
}

#[tokio::test]
async fn half_plus_two_runs_bounded_by_cgroups_and_leaves_nothing() {
    let sandbox = Sandbox::start(config(RuntimeKind::Gvisor))
        .await
        .expect("a gvisor sandbox starts");
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = half.predict(x(&[1.0, 2.0, 5.0])).await.unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![2.5, 3.0, 4.5]);

    // runsc put the whole sandbox in a cgroup with the configured bounds.
    let id = container_name(&sandbox);
    let settings = GvisorSettings::default();
    let memory = std::fs::read_to_string(cgroup("memory", &id, "memory.limit_in_bytes"))
        .expect("the sandbox's memory cgroup");
    assert_eq!(memory.trim(), settings.memory_bytes.to_string());
    let quota = std::fs::read_to_string(cgroup("cpu", &id, "cpu.cfs_quota_us"))
        .expect("the sandbox's cpu cgroup");
    assert_eq!(
        quota.trim(),
        ((settings.cpus * 100_000.0) as i64).to_string()
    );
    assert_eq!(runsc_containers(), std::slice::from_ref(&id));

    sandbox.shutdown().await;
    assert!(
        runsc_containers().is_empty(),
        "runsc still holds a container"
    );
    assert!(
        !cgroup("memory", &id, "").exists(),
        "the sandbox's cgroup is left"
    );
}

#[tokio::test]
async fn a_killed_worker_is_replaced_and_reaped() {
    let sandbox = Sandbox::start(config(RuntimeKind::Gvisor))
        .await
        .expect("a gvisor sandbox starts");
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let first = container_name(&sandbox);
    kill_worker(&sandbox, RuntimeKind::Gvisor).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.generation() < 2 {
        assert!(Instant::now() < deadline, "no new worker within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next call reaches the new worker, which loaded the model again.
    let out = half.predict(x(&[4.0])).await.unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![4.0]);
    assert_ne!(container_name(&sandbox), first);
    assert!(
        !runsc_containers().contains(&first),
        "the killed one is left"
    );
    sandbox.shutdown().await;
    assert!(
        runsc_containers().is_empty(),
        "runsc still holds a container"
    );
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_sandbox_memory_bound() {
    let mut config = config(RuntimeKind::Gvisor);
    config.gvisor.memory_bytes = 1 << 30;
    config.models.push(fixture("hostile/memory_bomb"));
    let sandbox = Sandbox::start(config)
        .await
        .expect("a gvisor sandbox starts");
    let bomb = sandbox
        .load_model(fixture("hostile/memory_bomb"))
        .await
        .unwrap();
    // 2^31 floats, 8 GiB: far past the 1 GiB bound on the whole sandbox. Measured here: the
    // allocation fails inside (ResourceExhausted), gVisor sizing its memory from the cgroup;
    // a worker the cgroup kills instead is as contained.
    let error = bomb
        .predict([("elements", Tensor::scalar(1i64 << 31))])
        .await
        .unwrap_err();
    assert!(
        matches!(error, tfsandbox::Error::WorkerExited { .. })
            || error.status().map(|s| s.code()) == Some(tonic::Code::ResourceExhausted),
        "{error}"
    );
    sandbox.shutdown().await;
    assert!(
        runsc_containers().is_empty(),
        "runsc still holds a container"
    );
}
