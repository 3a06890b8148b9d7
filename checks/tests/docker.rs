//! The docker runtime and its image, checked against the real engine.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures::StreamExt;
use tfsandbox::closure::{self, Closure, Variant};
use tfsandbox::image::{self, oci};
use tfsandbox::runtime::docker::{
    FIFO_IN, FIFO_OUT, MASKED_PATHS, READONLY_PATHS, UID_BASE, UID_COUNT,
};
use tfsandbox::{
    Config, DockerProtocol, DockerSettings, Error, RuntimeConfig, RuntimeKind, Sandbox, Tensor,
};
use tfsandbox_checks::{config, container_name, fixture, fixture_dirs, only_child, sandbox};

fn engine() -> Docker {
    Docker::connect_with_local_defaults().expect("a Docker engine")
}

/// The closure the runtime builds its image from: the worker's and the init's.
fn worker_closure() -> Closure {
    let worker = config(RuntimeKind::Docker)
        .resolve_worker_path()
        .expect("worker built");
    Closure::resolve(&worker, Variant::Cpu, &[])
        .expect("closure resolves")
        .with_init(&closure::init_beside(&worker), &[])
        .expect("the init's closure resolves")
}

fn sandbox_uid(uid: u32) -> bool {
    (UID_BASE..UID_BASE + UID_COUNT).contains(&uid)
}

#[tokio::test]
async fn the_container_has_every_security_setting() {
    let sandbox = sandbox(RuntimeKind::Docker).await;
    let name = container_name(&sandbox);
    let container = engine()
        .inspect_container(&name, None)
        .await
        .expect("the container exists while the sandbox runs");
    let host = container.host_config.expect("host config");
    let settings = tfsandbox::DockerSettings::default();

    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    // The protocol on stdout is not logged to the engine's disk.
    assert_eq!(
        host.log_config.as_ref().and_then(|l| l.typ.as_deref()),
        Some("none")
    );
    assert_eq!(host.privileged, Some(false));
    let tmp = host
        .tmpfs
        .as_ref()
        .and_then(|t| t.get("/tmp"))
        .expect("a /tmp tmpfs");
    for option in [
        "rw",
        "noexec",
        "nosuid",
        "nodev",
        "mode=1777",
        &format!("size={}", settings.tmp_bytes),
    ] {
        assert!(
            tmp.split(',').any(|o| o == option),
            "/tmp lacks {option}: {tmp}"
        );
    }
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.memory, Some(settings.memory_bytes));
    assert_eq!(
        host.memory_swap, host.memory,
        "no swap beyond the memory limit"
    );
    assert_eq!(host.pids_limit, Some(settings.pids_limit));
    let security = host.security_opt.clone().unwrap_or_default();
    assert!(
        security.contains(&"no-new-privileges".to_string()),
        "{security:?}"
    );
    // The jailer's allowlist plus the init's calls as the container's profile, not the engine's
    // default (the init narrows it to the allowlist for the worker).
    let profile = security
        .iter()
        .find_map(|o| o.strip_prefix("seccomp="))
        .expect("a seccomp profile");
    assert_eq!(
        profile,
        tfsandbox_jailer::seccomp::docker_init_profile_for(tfsandbox_jailer::seccomp::Policy::Cpu)
    );
    assert_eq!(
        host.cgroupns_mode,
        Some(bollard::models::HostConfigCgroupnsModeEnum::PRIVATE)
    );
    let strings = |l: &[&str]| l.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(host.masked_paths, Some(strings(MASKED_PATHS)));
    assert_eq!(host.readonly_paths, Some(strings(READONLY_PATHS)));
    for hidden in [
        "/proc/cmdline",
        "/proc/loadavg",
        "/proc/locks",
        "/proc/pressure",
        "/sys",
    ] {
        assert!(MASKED_PATHS.contains(&hidden), "{hidden} is not masked");
    }
    let ulimits: HashMap<String, (i64, i64)> = host
        .ulimits
        .unwrap_or_default()
        .into_iter()
        .map(|u| (u.name.unwrap(), (u.soft.unwrap(), u.hard.unwrap())))
        .collect();
    assert_eq!(ulimits["core"], (0, 0));
    assert_eq!(ulimits["nofile"], (settings.nofile, settings.nofile));
    assert_eq!(ulimits["nproc"], (settings.nproc, settings.nproc));
    assert_eq!(host.ipc_mode.as_deref(), Some("none"));
    assert_eq!(host.auto_remove, Some(true));

    let config = container.config.expect("config");
    let user = config.user.clone().unwrap_or_default();
    let (uid, gid) = user.split_once(':').expect("uid:gid");
    assert_eq!(uid, gid, "{user}");
    assert!(sandbox_uid(uid.parse().unwrap()), "{user}");
    assert_eq!(
        config
            .labels
            .as_ref()
            .and_then(|l| l.get("tfsandbox.uid"))
            .map(String::as_str),
        Some(uid)
    );
    // Pid 1 is the init, which starts the worker.
    let entrypoint = config.entrypoint.clone().unwrap_or_default();
    assert!(
        entrypoint.iter().any(|a| a == "/usr/bin/tfsandbox-init")
            && entrypoint.last().map(String::as_str) == Some("/usr/bin/tfsandbox-worker"),
        "{entrypoint:?}"
    );
    assert_eq!(config.tty, Some(false));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(
        config
            .labels
            .unwrap_or_default()
            .get("tfsandbox")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(container.name.as_deref(), Some(format!("/{name}").as_str()));

    // Exactly one read-only bind per model folder and one per protocol FIFO, and no other host
    // path.
    let mounts = container.mounts.unwrap_or_default();
    let mut expected: BTreeSet<String> = fixture_dirs()
        .iter()
        .map(|d| format!("/models/{}", d.file_name().unwrap().to_string_lossy()))
        .collect();
    expected.extend([FIFO_IN.to_string(), FIFO_OUT.to_string()]);
    let binds: BTreeSet<String> = mounts
        .iter()
        .filter_map(|m| m.destination.clone())
        .collect();
    assert_eq!(binds, expected);
    assert!(
        mounts.iter().all(|m| m.rw == Some(false)),
        "a mount is writable: {mounts:?}"
    );
    let env = config.env.unwrap_or_default();
    for (name, value) in [
        (tfsandbox_proto::worker_env::PROTOCOL_IN, FIFO_IN),
        (tfsandbox_proto::worker_env::PROTOCOL_OUT, FIFO_OUT),
    ] {
        assert!(env.contains(&format!("{name}={value}")), "{env:?}");
    }
}

/// This process's FIFO folders in the temp folder (`tfsandbox-<pid>-fifos-<n>`).
fn fifo_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("tfsandbox-{pid}-fifos-");
    let mut dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Where each of a process's descriptors points (`readlink /proc/PID/fd/N`).
fn fds_of(pid: u32) -> HashMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the worker's descriptors (the checks run as root)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The worker of a docker sandbox on the host: the only child of the container's init.
async fn docker_worker_pid(sandbox: &Sandbox) -> u32 {
    let container = engine()
        .inspect_container(&container_name(sandbox), None)
        .await
        .unwrap();
    let init = container.state.and_then(|s| s.pid).expect("the init's pid") as u32;
    only_child(init).expect("the init's child, the worker")
}

/// The protocol goes over the FIFOs, past the engine: the worker holds them in place of fds 0
/// and 1, its fd 1 is its stderr (so nothing of it reaches the attached stdout), and the host's
/// private folder holding them is gone with the sandbox.
#[tokio::test]
async fn the_protocol_is_on_the_fifos_and_the_attached_stdout_carries_nothing() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let sandbox = sandbox(RuntimeKind::Docker).await;
    let model = sandbox.load_model(fixture("identity")).await.unwrap();
    // Enough to fill the pipes many times over, both ways.
    let big = Tensor::new(&[8 << 20], &vec![7u8; 8 << 20]).unwrap();
    let call = tfsandbox::Predict::new([("data", big)]).signature("bytes_identity");
    let out = model.predict_with(call).await.unwrap();
    let echoed = out["data_out"].to_vec::<u8>().unwrap();
    assert_eq!(echoed, vec![7u8; 8 << 20]);

    let fds = fds_of(docker_worker_pid(&sandbox).await);
    let holding = |path: &str| fds.values().filter(|t| *t == path).count();
    assert_eq!(holding(FIFO_IN), 1, "{fds:?}");
    assert_eq!(holding(FIFO_OUT), 1, "{fds:?}");
    assert_eq!(fds[&0], "/dev/null", "{fds:?}");
    assert_eq!(fds[&1], fds[&2], "fd 1 is not stderr's copy: {fds:?}");

    let dirs = fifo_dirs_of(std::process::id());
    assert_eq!(dirs.len(), 1, "one FIFO folder per sandbox: {dirs:?}");
    let dir = &dirs[0];
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for (name, want) in [("in", 0o204), ("out", 0o402)] {
        let path = dir.join(name);
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        // The sandbox's uid may only read `in` and only write `out`: never both.
        assert_eq!(mode(&path), want, "{}", path.display());
    }

    sandbox.shutdown().await;
    assert_eq!(
        fifo_dirs_of(std::process::id()),
        Vec::<std::path::PathBuf>::new()
    );
}

/// The attach stream still carries the protocol where asked (and where the FIFOs cannot be made);
/// no FIFO is made or mounted then.
#[tokio::test]
async fn the_attach_fallback_still_carries_the_protocol() {
    let config = Config {
        runtime: RuntimeConfig::Docker(DockerSettings {
            protocol: DockerProtocol::Attach,
            ..DockerSettings::default()
        }),
        ..config(RuntimeKind::Docker)
    };
    let sandbox = Sandbox::start(config).await.expect("a sandbox on attach");
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    let container = engine()
        .inspect_container(&container_name(&sandbox), None)
        .await
        .unwrap();
    let binds: Vec<String> = container
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.destination)
        .filter(|d| !d.starts_with("/models/"))
        .collect();
    assert!(binds.is_empty(), "{binds:?}");
    let fds = fds_of(docker_worker_pid(&sandbox).await);
    assert!(
        !fds.values().any(|t| t.starts_with("/run/tfsandbox")),
        "{fds:?}"
    );
    assert!(fifo_dirs_of(std::process::id()).is_empty());
    sandbox.shutdown().await;
}

/// A worker that never opens its FIFOs does not hang the host: the start fails once the start
/// timeout has passed, saying so, and leaves no container and no FIFO folder.
#[tokio::test]
async fn a_worker_that_never_opens_its_fifos_fails_the_start_within_the_start_timeout() {
    let start_timeout = Duration::from_secs(5);
    let config = Config {
        worker_path: Some(
            config(RuntimeKind::Docker)
                .resolve_worker_path()
                .unwrap()
                .with_file_name("tfsandbox-hostile-peer"),
        ),
        worker_log: "never-opens".into(),
        start_timeout,
        ..config(RuntimeKind::Docker)
    };
    // The image of the peer's closure is built first, outside the timing.
    tfsandbox::image::ensure_loaded(
        &engine(),
        &Closure::resolve(config.worker_path.as_ref().unwrap(), Variant::Cpu, &[])
            .unwrap()
            .with_init(
                &closure::init_beside(config.worker_path.as_ref().unwrap()),
                &[],
            )
            .unwrap(),
        None,
    )
    .await
    .expect("the peer's image");
    let began = std::time::Instant::now();
    let error = tokio::time::timeout(start_timeout * 4, Sandbox::start(config))
        .await
        .expect("the start gives up by itself")
        .err()
        .expect("the start fails");
    let took = began.elapsed();
    assert!(took >= start_timeout, "gave up after {took:?}");
    assert!(matches!(error, Error::WorkerExited { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "the worker exited (signal: 9 (SIGKILL), killed by the host: it did not open its \
             protocol FIFO {FIFO_IN} within 5s) during starting the worker"
        )),
        "{text}"
    );
    assert_eq!(
        tfsandbox::runtime::docker::containers_of_this_process()
            .await
            .unwrap(),
        0
    );
    assert!(fifo_dirs_of(std::process::id()).is_empty());
}

#[tokio::test]
async fn the_worker_sees_its_confinement_from_inside() {
    let only = fixture("half_plus_two");
    let sandbox = Sandbox::start(tfsandbox::Config {
        models: vec![only],
        ..config(RuntimeKind::Docker)
    })
    .await
    .expect("sandbox starts");
    let info = sandbox.info().await.unwrap();
    let posture = info.posture.expect("a posture report");
    assert_eq!(info.uid, info.gid);
    assert!(sandbox_uid(info.uid), "uid {}", info.uid);
    assert_ne!(info.pid, 1, "the worker is pid 1, not the init");
    // Its own cgroup namespace (and mount, pid, net, ipc, uts), not the host's.
    let host: BTreeSet<String> = std::fs::read_dir("/proc/self/ns")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    for kind in ["cgroup", "ipc", "mnt", "net", "pid", "uts"] {
        let ns = posture
            .namespaces
            .iter()
            .find(|n| n.starts_with(&format!("{kind}:")))
            .unwrap_or_else(|| panic!("no {kind} namespace: {:?}", posture.namespaces));
        assert!(!host.contains(ns), "{ns} is the host's");
    }
    // The engine mounts /sys (and cgroups in it); the last mount there is the mask over all of it.
    assert_eq!(
        posture
            .mounts
            .iter()
            .rfind(|m| m.starts_with("/sys"))
            .map(String::as_str),
        Some("/sys"),
        "{:?}",
        posture.mounts
    );
    assert_eq!(posture.cap_effective, "0000000000000000");
    assert_eq!(posture.cap_permitted, "0000000000000000");
    assert!(posture.no_new_privs);
    assert_eq!(posture.network_interfaces, vec!["lo"]);
    assert!(posture.root_read_only, "/ is writable");
    assert_eq!(posture.visible_models, vec!["half_plus_two"]);
    assert!(
        posture.rlimits.contains(&"core 0 0".to_string()),
        "{:?}",
        posture.rlimits
    );
    // It still computes.
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(model.metadata().path, "/models/half_plus_two");
}

#[test]
fn two_builds_from_the_same_inputs_are_byte_identical() {
    let closure = worker_closure();
    let build = || {
        let mut archive = oci::HashingWriter::new(std::io::sink());
        let built =
            oci::write_archive(&closure, "tfsandbox-worker:test", &mut archive, &|_| {}).unwrap();
        (built, archive.finish())
    };
    let (first, first_archive) = build();
    let (second, second_archive) = build();
    assert_eq!(first, second);
    assert_eq!(first_archive, second_archive, "archives differ");
    // Nothing but the closure and a few hundred bytes of tar headers, config and /etc files.
    assert!(
        first.archive_size - closure.total_size() < 64 * 1024,
        "{} vs {}",
        first.archive_size,
        closure.total_size()
    );
}

#[tokio::test]
async fn the_engine_holds_exactly_the_closure_and_the_fixed_files() {
    let closure = worker_closure();
    let docker = engine();
    let reference = image::ensure_loaded(&docker, &closure, None)
        .await
        .expect("image loads");
    let archive: Vec<u8> = docker
        .export_image(&reference)
        .map(|chunk| chunk.expect("export"))
        .collect::<Vec<_>>()
        .await
        .concat();

    // `docker save` holds one layer tar; list what is in it.
    let mut outer = tar::Archive::new(archive.as_slice());
    let mut listing = None;
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let mut layer = tar::Archive::new(bytes.as_slice());
        let Ok(entries) = layer.entries() else {
            continue;
        };
        let paths: Result<Vec<String>, _> = entries
            .map(|e| {
                let e = e?;
                let path = format!("/{}", e.path()?.display());
                Ok::<_, std::io::Error>(if e.header().entry_type().is_dir() {
                    format!("{}/", path.trim_end_matches('/'))
                } else {
                    path
                })
            })
            .collect();
        if let Ok(paths) = paths {
            if paths.iter().any(|p| p == "/usr/bin/tfsandbox-worker") {
                listing = Some(paths);
            }
        }
    }
    let listing = listing.expect("a layer holding the worker");
    assert_eq!(listing, oci::layer_listing(&closure));

    let files: BTreeSet<&str> = listing
        .iter()
        .filter(|p| !p.ends_with('/'))
        .map(String::as_str)
        .collect();
    let mut expected: BTreeSet<&str> = closure
        .entries
        .iter()
        .map(|e| e.image_path.as_str())
        .collect();
    expected.extend(["/etc/passwd", "/etc/group"]);
    assert!(
        files.contains("/usr/bin/tfsandbox-init"),
        "no init in the image"
    );
    assert_eq!(
        files, expected,
        "files beyond the closure and /etc/passwd, /etc/group"
    );
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with("/sh") || f.contains("busybox")),
        "a shell in the image"
    );
}

#[tokio::test]
async fn killing_the_host_mid_call_leaves_no_container_after_the_next_start() {
    let exe = std::env::current_exe().unwrap();
    let cli = exe.parent().unwrap().parent().unwrap().join("tfsandbox");
    let mut host = tokio::process::Command::new(&cli)
        .args(["run", "--runtime", "docker", "--model"])
        .arg(fixture("busy_loop"))
        .args(["--input", "n=1000000000000"])
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI starts");
    let owner_prefix = format!("{}:", host.id().unwrap());
    let docker = engine();
    let owned = || async {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec!["tfsandbox".to_string()],
            )])),
            ..Default::default()
        };
        docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get("tfsandbox.owner"))
                    .is_some_and(|o| o.starts_with(&owner_prefix))
            })
            .filter_map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while owned().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CLI never started its container"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orphan = owned().await.remove(0);
    let host_pid = host.id().unwrap();
    // Give the call time to reach the endless loop, then kill the host outright.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Counted while the host lives: once it is dead, any docker start (another test's) removes
    // its folder.
    assert_eq!(fifo_dirs_of(host_pid).len(), 1, "the host's FIFO folder");
    host.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let next = sandbox(RuntimeKind::Docker).await;
    assert!(
        owned().await.is_empty(),
        "a container of the killed host survived the next start"
    );
    assert!(
        fifo_dirs_of(host_pid).is_empty(),
        "the killed host's FIFO folder survived the next start"
    );

    // It was killed (137), not left to drain: by its init when the host's attach stream ended
    // (docker_lifetime.rs checks that alone), or else by whichever start reaped it.
    let options = EventsOptions {
        since: Some(started.to_string()),
        until: Some((started + 600).to_string()),
        filters: Some(HashMap::from([
            ("container".to_string(), vec![orphan.clone()]),
            ("event".to_string(), vec!["die".to_string()]),
        ])),
    };
    let until_now = tokio::time::timeout(
        Duration::from_secs(5),
        docker.events(Some(options)).take(1).collect::<Vec<_>>(),
    )
    .await
    .expect("the engine reports the container's end");
    let died = until_now
        .into_iter()
        .next()
        .expect("a die event")
        .expect("event");
    let code = died
        .actor
        .and_then(|a| a.attributes)
        .and_then(|a| a.get("exitCode").cloned());
    assert_eq!(
        code.as_deref(),
        Some("137"),
        "container {orphan} ended by itself"
    );
    drop(next);
}

#[tokio::test]
async fn two_sandboxes_run_as_two_uids_of_their_own() {
    let one = sandbox(RuntimeKind::Docker).await;
    let two = sandbox(RuntimeKind::Docker).await;
    let (a, b) = (one.info().await.unwrap(), two.info().await.unwrap());
    assert!(
        sandbox_uid(a.uid) && sandbox_uid(b.uid),
        "{} {}",
        a.uid,
        b.uid
    );
    assert_ne!(a.uid, b.uid, "two live sandboxes share a uid");
    assert_ne!(a.uid, 65534);
}

fn text(value: &str) -> Tensor {
    Tensor::strings(&[], vec![value.to_string()]).unwrap()
}

/// /proc is read-only, the host's files in it read empty, /sys is empty, and the init is out of
/// the worker's reach; the worker still computes.
#[tokio::test]
async fn host_files_in_proc_are_masked_and_proc_is_read_only() {
    let sandbox = Sandbox::start(tfsandbox::Config {
        models: vec![
            fixture("half_plus_two"),
            fixture("hostile/read_file"),
            fixture("hostile/write_file"),
            fixture("hostile/list_files"),
        ],
        ..config(RuntimeKind::Docker)
    })
    .await
    .expect("sandbox starts");
    let read = sandbox
        .load_model(fixture("hostile/read_file"))
        .await
        .unwrap();
    let contents = |path: &'static str| {
        let read = read.clone();
        async move {
            read.predict([("path", text(path))])
                .await
                .map(|out| out["contents"].string_values().unwrap()[0].clone())
        }
    };
    for masked in [
        "/proc/cmdline",
        "/proc/loadavg",
        "/proc/locks",
        "/proc/uptime",
    ] {
        let got = contents(masked).await.expect(masked);
        assert!(
            got.is_empty(),
            "{masked} shows {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert!(
        contents("/proc/pressure/cpu").await.is_err(),
        "/proc/pressure/cpu is readable"
    );
    // The worker's own files are there: /proc itself is not hidden.
    assert!(!contents("/proc/self/status").await.unwrap().is_empty());
    // Pid 1 is the init, which is not dumpable: its environment and fds are not the worker's.
    for path in ["/proc/1/environ", "/proc/1/fd/0"] {
        let error = contents(path).await.unwrap_err();
        assert!(
            error.to_string().contains("ermission denied"),
            "{path}: {error}"
        );
    }

    let list = sandbox
        .load_model(fixture("hostile/list_files"))
        .await
        .unwrap();
    let found = list.predict([("pattern", text("/sys/*"))]).await.unwrap();
    assert_eq!(
        found["matches"].string_values().unwrap().len(),
        0,
        "/sys is visible"
    );

    let write = sandbox
        .load_model(fixture("hostile/write_file"))
        .await
        .unwrap();
    for target in ["/proc/self/comm", "/proc/self/oom_score_adj"] {
        let error = write
            .predict([("path", text(target)), ("contents", text("1"))])
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("file system"),
            "{target}: {error}"
        );
    }

    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
}

/// A model only its owner may read (0700 folders, 0600 files) loads, through an ACL entry for
/// the sandbox's uid alone, which is gone again once the sandbox is.
#[tokio::test]
async fn a_private_model_loads_and_its_acl_entries_go_with_the_sandbox() {
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::Builder::new()
        .prefix("tfsandbox-private-")
        .tempdir()
        .unwrap();
    let model_dir = private.path().join("half_plus_two");
    let mut pending = vec![(fixture("half_plus_two"), model_dir.clone())];
    let mut copied = Vec::new();
    while let Some((from, to)) = pending.pop() {
        if from.is_dir() {
            std::fs::create_dir(&to).unwrap();
            for entry in std::fs::read_dir(&from).unwrap() {
                let entry = entry.unwrap();
                pending.push((entry.path(), to.join(entry.file_name())));
            }
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o700)).unwrap();
        } else {
            std::fs::copy(&from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        copied.push(to);
    }
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    let sandbox = Sandbox::start(tfsandbox::Config {
        models: vec![model_dir.clone()],
        ..config(RuntimeKind::Docker)
    })
    .await
    .expect("sandbox starts");
    let uid = sandbox.info().await.unwrap().uid;
    let model = sandbox
        .load_model(&model_dir)
        .await
        .expect("the private model loads");
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    // Nobody else gained anything: the modes still say 0700 for folders, 0600 for files, but
    // for the ACL's mask in the group bits, which the owning group's own entry (none) limits.
    for path in &copied {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o707;
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}: others gained access", path.display());
    }
    let acl_of = |path: &std::path::Path| {
        let mut buffer = vec![0u8; 1024];
        rustix::fs::getxattr(path, "system.posix_acl_access", &mut buffer[..]).ok()
    };
    assert!(acl_of(&model_dir).is_some(), "no ACL was needed?");
    let status = sandbox.shutdown().await;
    assert!(status.contains("signal: 9"), "{status}");
    for path in &copied {
        assert_eq!(
            acl_of(path),
            None,
            "{}: an ACL entry for {uid} is left",
            path.display()
        );
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{}: mode not restored", path.display());
    }
}

#[tokio::test]
async fn an_engine_runtime_the_engine_lacks_is_refused_naming_it() {
    let config = Config {
        runtime: RuntimeConfig::Docker(DockerSettings {
            engine_runtime: Some("tfsandbox-no-such-runtime".into()),
            ..DockerSettings::default()
        }),
        ..config(RuntimeKind::Docker)
    };
    let error = Sandbox::start(config).await.err().expect("the start fails");
    let text = error.to_string();
    assert!(text.contains("'tfsandbox-no-such-runtime'"), "{text}");
    assert!(text.contains("runc"), "names the runtimes it has: {text}");
}

/// The docker runtime's container under gVisor, where the engine has runsc registered; the
/// engine here is shared and is not reconfigured for it.
#[tokio::test]
async fn the_worker_runs_under_runsc_where_the_engine_has_it() {
    let info = engine().info().await.expect("the engine's info");
    let runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    if !runtimes.iter().any(|r| r == "runsc") {
        println!(
            "skipped: the engine has no runtime 'runsc' registered (it has {}); \
             nothing is checked here",
            runtimes.join(", ")
        );
        return;
    }
    let config = Config {
        runtime: RuntimeConfig::Docker(DockerSettings {
            engine_runtime: Some("runsc".into()),
            ..DockerSettings::default()
        }),
        ..config(RuntimeKind::Docker)
    };
    let sandbox = Sandbox::start(config).await.expect("a sandbox under runsc");
    let container = engine()
        .inspect_container(&container_name(&sandbox), None)
        .await
        .unwrap();
    let runtime = container.host_config.and_then(|h| h.runtime);
    assert_eq!(runtime.as_deref(), Some("runsc"));
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = half
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    sandbox.shutdown().await;
}
