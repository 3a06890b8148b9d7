//! A docker sandbox ends with its host, even when the host is killed outright and the worker is
//! busy in TensorFlow and never looks at its stdin: the container's pid 1, `tfsandbox-init`,
//! sees the attach stream end and kills the worker, and so ends the container on its own.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures::StreamExt;
use tfsandbox_checks::fixture;

/// How long a container may outlive its killed host.
const BOUND: Duration = Duration::from_secs(20);

/// Ids of the containers (in any state) whose owner label names the host process `pid`.
async fn containers_of(docker: &Docker, pid: u32) -> Vec<String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec!["tfsandbox".to_string()],
        )])),
        ..Default::default()
    };
    let prefix = format!("{pid}:");
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("tfsandbox.owner"))
                .is_some_and(|o| o.starts_with(&prefix))
        })
        .filter_map(|c| c.id)
        .collect()
}

#[tokio::test]
async fn a_container_ends_by_itself_when_its_host_is_killed_mid_call() {
    let exe = std::env::current_exe().unwrap();
    let cli = exe.parent().unwrap().parent().unwrap().join("tfsandbox");
    let mut host = tokio::process::Command::new(&cli)
        .args(["run", "--runtime", "docker", "--model"])
        .arg(fixture("hostile/endless_loop"))
        .args(["--input", "n=1152921504606846976"])
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI starts");
    let pid = host.id().unwrap();
    let docker = Docker::connect_with_local_defaults().expect("a Docker engine");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let container = loop {
        if let Some(id) = containers_of(&docker, pid).await.pop() {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CLI never started its container"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let the call reach the endless loop, then kill the host: no drop, no goodbye.
    tokio::time::sleep(Duration::from_secs(5)).await;
    host.start_kill().unwrap();
    host.wait().await.unwrap();
    let killed = tokio::time::Instant::now();

    // How it ended, from the engine's events: a "die" with no "kill" before it, which the host
    // (or another host's orphan reaping, or a forced removal) would have sent.
    let options = EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(HashMap::from([(
            "container".to_string(),
            vec![container.clone()],
        )])),
    };
    let mut events = docker.events(Some(options));
    let mut seen = Vec::new();
    let died = tokio::time::timeout(BOUND, async {
        while let Some(event) = events.next().await {
            let event = event.expect("an engine event");
            let action = event.action.clone().unwrap_or_default();
            let code = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("exitCode").cloned());
            seen.push(action.clone());
            if action == "die" {
                return code;
            }
        }
        None
    })
    .await;
    let Ok(code) = died else {
        panic!(
            "container {container} still there {:?} after its host was killed ({seen:?})",
            killed.elapsed()
        );
    };
    assert!(
        !seen.iter().any(|a| a.starts_with("kill")),
        "the container was killed from outside, it did not end by itself: {seen:?}"
    );
    // The init killed the worker (SIGKILL: 128 + 9) and exited with its status.
    assert_eq!(code.as_deref(), Some("137"), "{seen:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !containers_of(&docker, pid).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "container {container} died but was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
