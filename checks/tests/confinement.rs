//! The process runtime's sandbox, as the worker reports it from inside (the docker runtime's is
//! checked in docker.rs), and hostile models in every runtime.

use std::collections::BTreeSet;
use std::time::Duration;

use tfsandbox::closure::{Closure, Variant};
use tfsandbox::{Config, Error, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, each_runtime, fixture};
use tonic::Code;

fn host_namespaces() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/ns")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

/// The worker's program interpreter, as its closure names it: `/lib64/ld-linux-x86-64.so.2` on
/// Debian, a glibc folder under `/nix/store` in a Nix build. The sandbox holds it at that path.
fn interpreter() -> String {
    let worker = config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built");
    Closure::resolve_cached(&worker, Variant::Cpu, &[])
        .expect("the worker's closure")
        .interpreter
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
    // Pid 1 is the jailer's init, which outlives the worker's own parent-death signal.
    assert_eq!(
        info.pid, 2,
        "the worker is the child of its pid namespace's init, not pid 1 itself"
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

    // The root holds the closure, the model, /tmp, three devices and /proc, whose host-wide
    // entries are masked; nothing else is mounted.
    let masked: BTreeSet<String> = tfsandbox_jailer::confine::root::MASKED_PROC_FILES
        .iter()
        .chain(tfsandbox_jailer::confine::root::MASKED_PROC_DIRS)
        .map(|name| format!("/proc/{name}"))
        .collect();
    let interpreter = interpreter();
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
                || *mount == interpreter
                || masked.contains(mount),
            "unexpected mount {mount}"
        );
    }
    // It still computes.
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(model.metadata().path, "/models/half_plus_two");
}

/// A config for `runtime` mounting the hostile models (and the ordinary fixtures).
fn hostile_config(runtime: RuntimeKind) -> Config {
    let mut config = config(runtime);
    for name in [
        "read_file",
        "write_file",
        "list_files",
        "memory_bomb",
        "endless_loop",
    ] {
        config.models.push(fixture(&format!("hostile/{name}")));
    }
    config
}

fn text(value: &str) -> Tensor {
    Tensor::strings(&[], vec![value.to_string()]).unwrap()
}

async fn hostile_models_end_in_clear_errors(runtime: RuntimeKind) {
    let secret = tfsandbox_checks::escape::host_secret();
    let sandbox = Sandbox::start(hostile_config(runtime))
        .await
        .expect("sandbox starts");

    // ReadFile of a host secret: the file does not exist in the sandbox.
    let read = sandbox
        .load_model(fixture("hostile/read_file"))
        .await
        .unwrap();
    let error = read
        .predict([("path", text(&secret.display().to_string()))])
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|s| s.code()),
        Some(Code::NotFound),
        "{error}"
    );
    assert!(
        error.to_string().contains(&secret.display().to_string()),
        "{error}"
    );
    let passwd = read.predict([("path", text("/etc/passwd"))]).await.unwrap();
    let passwd =
        String::from_utf8_lossy(&passwd["contents"].string_values().unwrap()[0]).into_owned();
    assert!(
        !passwd.contains("root:"),
        "the host's /etc/passwd is visible: {passwd}"
    );

    // WriteFile outside /tmp fails; inside /tmp it works (the sandbox's own scratch space).
    let write = sandbox
        .load_model(fixture("hostile/write_file"))
        .await
        .unwrap();
    // The secret's name under /tmp: the sandbox's own tmpfs, and the secret's own path when the
    // host's temporary folder is /tmp (under Nix it is /build).
    let inside_tmp = format!("/tmp/{}", secret.file_name().unwrap().to_string_lossy());
    let host_path = format!("{}/escaped", env!("CARGO_MANIFEST_DIR"));
    for target in ["/escaped", "/models/write_file/escaped", host_path.as_str()] {
        let error = write
            .predict([("path", text(target)), ("contents", text("x"))])
            .await
            .unwrap_err();
        assert!(error.status().is_some(), "{target}: {error}");
    }
    let written = write
        .predict([("path", text(&inside_tmp)), ("contents", text("x"))])
        .await
        .unwrap();
    assert_eq!(written["written"].to_vec::<i32>().unwrap(), vec![1]);
    assert!(
        !std::path::Path::new(&host_path).exists(),
        "a file appeared on the host"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "the host's secret\n",
        "the host's file changed"
    );

    // MatchingFiles over / sees the sandbox's root, none of the host's.
    let list = sandbox
        .load_model(fixture("hostile/list_files"))
        .await
        .unwrap();
    let matches = list.predict([("pattern", text("/*"))]).await.unwrap();
    let found: Vec<String> = matches["matches"]
        .string_values()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    // Exactly the sandbox's own top level, the loader's included; the engine adds /sys and its
    // marker file, and /run holding the protocol FIFOs; gVisor /sys.
    let interpreter = interpreter();
    let loader_top = format!(
        "/{}",
        interpreter
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap()
    );
    let mut expected = vec![
        "/dev",
        "/etc",
        &loader_top,
        "/models",
        "/proc",
        "/tmp",
        "/usr",
    ];
    match runtime {
        RuntimeKind::Docker => expected.extend(["/.dockerenv", "/run", "/sys"]),
        // gVisor's kernel mounts a /sys of its own making, none of the host's.
        RuntimeKind::Gvisor => expected.push("/sys"),
        RuntimeKind::Process => {}
    }
    expected.sort();
    expected.dedup();
    assert_eq!(
        found, expected,
        "the sandbox's / lists more or less than its own root"
    );

    // A memory bomb: refused by the address-space limit (process) or killed by the cgroup (docker).
    let bomb = sandbox
        .load_model(fixture("hostile/memory_bomb"))
        .await
        .unwrap();
    let error = bomb
        .predict([("elements", Tensor::scalar(1i64 << 31))])
        .await
        .unwrap_err();
    match runtime {
        RuntimeKind::Process => assert_eq!(
            error.status().map(|s| s.code()),
            Some(Code::ResourceExhausted),
            "{error}"
        ),
        RuntimeKind::Docker => assert!(
            matches!(error, Error::WorkerExited { .. })
                && error.to_string().contains("signal: 9")
                && error.to_string().contains("out of memory"),
            "{error}"
        ),
        // The address-space limit inside gVisor refuses it first; a worker the sandbox's cgroup
        // kills instead is as contained.
        RuntimeKind::Gvisor => assert!(
            matches!(error, Error::WorkerExited { .. })
                || error.status().map(|s| s.code()) == Some(Code::ResourceExhausted),
            "{error}"
        ),
    }

    // An endless loop: the call's deadline ends it, with an error that says so.
    let short = Sandbox::start(Config {
        call_timeout: Duration::from_secs(2),
        ..hostile_config(runtime)
    })
    .await
    .unwrap();
    let endless = short
        .load_model(fixture("hostile/endless_loop"))
        .await
        .unwrap();
    let error = endless
        .predict([("n", Tensor::scalar(1i64 << 60))])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error}");
    assert!(error.to_string().contains("endless_loop"), "{error}");

    // The host is unharmed and another sandbox computes.
    drop(secret);
    let other = Sandbox::start(config(runtime)).await.unwrap();
    let model = other.load_model(fixture("half_plus_two")).await.unwrap();
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
}

each_runtime!(hostile_models_end_in_clear_errors);
