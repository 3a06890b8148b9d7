//! The process runtime's sandbox, as the worker reports it from inside (the docker runtime's is
//! checked in docker.rs), and hostile models in both runtimes.

use std::collections::BTreeSet;

use tfsandbox::{Config, RuntimeKind, Sandbox};
use tfsandbox_checks::{config, fixture};

fn host_namespaces() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/ns")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn the_process_worker_sees_its_confinement_from_inside() {
    let sandbox = Sandbox::start(Config {
        models: vec![fixture("half_plus_two")],
        ..config(RuntimeKind::Process)
    })
    .await
    .expect("sandbox starts");
    let info = sandbox.info().await.unwrap();
    let posture = info.posture.expect("a posture report");
    assert_eq!((info.uid, info.gid), (65534, 65534));
    assert_eq!(
        info.pid, 1,
        "the worker is its pid namespace's first process"
    );
    assert_eq!(posture.cap_effective, "0000000000000000");
    assert_eq!(posture.cap_permitted, "0000000000000000");
    assert_eq!(posture.cap_bounding, "0000000000000000");
    assert!(posture.no_new_privs);
    assert!(
        !posture.seccomp_modes.is_empty() && posture.seccomp_modes.iter().all(|&m| m == 2),
        "{:?}",
        posture.seccomp_modes
    );
    assert!(
        posture.landlock.starts_with("fully enforced"),
        "{}",
        posture.landlock
    );
    assert_eq!(posture.network_interfaces, vec!["lo"]);
    assert!(posture.root_read_only);
    assert_eq!(posture.visible_models, vec!["half_plus_two"]);
    assert!(
        posture.rlimits.contains(&"core 0 0".to_string()),
        "{:?}",
        posture.rlimits
    );

    // Every namespace but time is its own.
    let host = host_namespaces();
    for ns in &posture.namespaces {
        if !ns.starts_with("time") {
            assert!(!host.contains(ns), "{ns} is the host's");
        }
    }
    let kinds: BTreeSet<&str> = posture
        .namespaces
        .iter()
        .filter_map(|n| n.split(':').next())
        .collect();
    for kind in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(
            kinds.contains(kind),
            "no {kind} namespace listed: {:?}",
            posture.namespaces
        );
    }

    // The root holds the closure, the model, /tmp, three devices and /proc; nothing else is mounted.
    let expected: BTreeSet<&str> = [
        "/",
        "/models/half_plus_two",
        "/tmp",
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/proc",
    ]
    .into();
    for mount in &posture.mounts {
        assert!(
            expected.contains(mount.as_str())
                || mount.starts_with("/usr/lib/tfsandbox/")
                || mount == "/usr/bin/tfsandbox-worker"
                || mount.starts_with("/lib64/"),
            "unexpected mount {mount}"
        );
    }
    // It still computes.
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(model.metadata().path, "/models/half_plus_two");
}
