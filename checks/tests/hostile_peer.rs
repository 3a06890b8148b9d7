//! Peers that break the protocol: a worker writing garbage, truncated frames or huge length
//! prefixes to the host, and a host doing the same to a real worker. Neither side may panic,
//! hang or leave anything behind; each ends with an error that says what went wrong.

use std::time::{Duration, Instant};

use tfsandbox::runtime::{self, Launch};
use tfsandbox::{Config, RuntimeKind, Sandbox};
use tfsandbox_checks::{config, each_runtime};
use tfsandbox_cli::soak::Census;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hostile_peer() -> std::path::PathBuf {
    config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built")
        .with_file_name("tfsandbox-hostile-peer")
}

/// Starts a sandbox around the hostile peer in `mode`; returns the error the start ended in.
async fn start_against(runtime: RuntimeKind, mode: &str) -> String {
    let config = Config {
        worker_path: Some(hostile_peer()),
        // The peer reads its mode from the worker's log variable.
        worker_log: mode.into(),
        start_timeout: Duration::from_secs(5),
        ..config(runtime)
    };
    let before = Census::take(&config).await.unwrap();
    let started = tokio::time::timeout(Duration::from_secs(60), Sandbox::start(config.clone()))
        .await
        .unwrap_or_else(|_| panic!("{mode}: the start hangs"));
    let error = match started {
        Ok(_) => panic!("{mode}: a sandbox started against a peer that speaks no protocol"),
        Err(error) => error.to_string(),
    };
    // Nothing of the failed start stays behind.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after = Census::take(&config).await.unwrap();
        let clean = after.processes.is_subset(&before.processes)
            && after.containers <= before.containers
            && after.fds <= before.fds
            && after.cgroups <= before.cgroups
            && after.runsc_state <= before.runsc_state;
        if clean {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: left behind: {after:?}, before: {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    error
}

async fn the_host_survives_a_worker_that_breaks_the_protocol(runtime: RuntimeKind) {
    for mode in ["garbage", "huge-frame", "truncated"] {
        let error = start_against(runtime, mode).await;
        assert!(error.contains("starting the worker"), "{mode}: {error}");
    }
    // Real yamux and HTTP/2, then a gRPC message claiming 4 GiB: refused by its length alone.
    let error = start_against(runtime, "huge-message").await;
    assert!(
        error.contains("message length too large: found 4294967295 bytes"),
        "{error}"
    );
}

/// Starts a real worker through the runtime and writes `bytes` to its stdin as its host would.
async fn feed_worker(runtime: RuntimeKind, bytes: &[u8]) -> (tfsandbox::WorkerExit, String) {
    let config = config(runtime);
    let launch = Launch {
        sandbox_id: format!("hostile-host-{}", std::process::id()),
        worker_path: config.resolve_worker_path().expect("worker built"),
        worker_log: "info".into(),
        max_message_bytes: tfsandbox::Config::default().max_message_bytes,
        session: Default::default(),
        start_timeout: tfsandbox::Config::default().start_timeout,
    };
    let runtime = runtime::for_config(&config).await.unwrap();
    let mut worker = runtime.start(&launch).await.unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = worker.stderr.read_to_string(&mut text).await;
        text
    });
    let stdout =
        tokio::spawn(
            async move { tokio::io::copy(&mut worker.stdout, &mut tokio::io::sink()).await },
        );
    // The worker may stop reading half-way: that is an answer too.
    let _ = worker.stdin.write_all(bytes).await;
    let _ = worker.stdin.flush().await;
    let status = tokio::time::timeout(Duration::from_secs(30), worker.control.wait())
        .await
        .expect("the worker ends instead of waiting forever");
    let _ = stdout.await;
    (status, stderr.await.unwrap())
}

async fn a_worker_survives_a_host_that_breaks_the_protocol(runtime: RuntimeKind) {
    let mut garbage = vec![0u8; 1 << 20];
    let mut state: u32 = 7;
    for b in &mut garbage {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (state >> 24) as u8;
    }
    // A yamux data frame opening stream 1 and claiming a 4 GiB body.
    let huge = [0u8, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff];
    for (what, bytes) in [("garbage", garbage.as_slice()), ("huge frame", &huge)] {
        let (status, stderr) = feed_worker(runtime, bytes).await;
        assert_eq!(status.code, Some(1), "{what}: {status}\n{stderr}");
        assert!(stderr.contains("worker failed"), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

each_runtime!(
    the_host_survives_a_worker_that_breaks_the_protocol,
    a_worker_survives_a_host_that_breaks_the_protocol,
);
