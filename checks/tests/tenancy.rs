//! Sandboxes of the process runtime side by side: each in its own cgroup, whose memory, CPU and
//! pids bounds hold over all of its processes together, so one tenant's bomb is killed while
//! another's model keeps answering, and a CPU hog is throttled at its quota while another answers
//! within its deadlines; and a host with no cgroup to give fails closed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tfsandbox::{
    Config, Error, Predict, ProcessSettings, RuntimeConfig, RuntimeKind, Sandbox, Tensor,
};
use tfsandbox_checks::{config, fixture, worker_host_pid};

fn bounded(settings: ProcessSettings) -> Config {
    Config {
        runtime: RuntimeConfig::Process(settings),
        ..config(RuntimeKind::Process)
    }
}

fn x(values: &[f32]) -> [(&'static str, Tensor); 1] {
    [("x", Tensor::new(&[values.len(), 1], values).unwrap())]
}

/// The folder of `pid`'s cgroup that holds `controller`, from its /proc/PID/cgroup and this
/// machine's mounts (a v1 hierarchy mounted for the controller, else the v2 one).
fn cgroup_dir(pid: u32, controller: &str) -> PathBuf {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mounts.lines() {
        let (left, right) = line.split_once(" - ").unwrap();
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (root, mountpoint, fstype) = (left[3], left[4], right[0]);
        let v1 = fstype == "cgroup" && right[2].split(',').any(|o| o == controller);
        let wanted = |controllers: &str| match v1 {
            true => controllers.split(',').any(|c| c == controller),
            false => controllers.is_empty(),
        };
        if !(v1 || fstype == "cgroup2") {
            continue;
        }
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            wanted(controllers).then_some(path)
        });
        if let Some(path) = path {
            let relative = path
                .strip_prefix(root.trim_end_matches('/'))
                .unwrap_or(path);
            let dir = Path::new(mountpoint).join(relative.trim_start_matches('/'));
            if v1 || dir.join(format!("{controller}.max")).exists() {
                return dir;
            }
        }
    }
    panic!("no cgroup of pid {pid} holds {controller}")
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn every_process_of_a_sandbox_is_in_its_own_cgroup_with_its_bounds_and_it_goes_with_it() {
    let sandbox = Sandbox::start(bounded(ProcessSettings {
        memory_bytes: 768 << 20,
        cpus: 0.5,
        pids: 100,
        ..ProcessSettings::default()
    }))
    .await
    .expect("a bounded sandbox starts");
    let jailer = sandbox.host_pid().expect("the jailer's pid");
    let worker = worker_host_pid(&sandbox).expect("the worker's pid");
    let memory = cgroup_dir(worker, "memory");
    let name = memory.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("tfsandbox-"),
        "the worker is in {memory:?}"
    );
    // The jailer joined before it forked or unshared anything: the whole sandbox is inside.
    assert_eq!(cgroup_dir(jailer, "memory"), memory);
    let (cpu, pids) = (cgroup_dir(worker, "cpu"), cgroup_dir(worker, "pids"));
    if memory.join("memory.max").exists() {
        assert_eq!(read(&memory, "memory.max"), (768u64 << 20).to_string());
        assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            read(&memory, "memory.limit_in_bytes"),
            (768u64 << 20).to_string()
        );
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(&memory, "memory.memsw.limit_in_bytes"),
                (768u64 << 20).to_string(),
                "swap is bounded to the memory bound, so there is none"
            );
        }
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    }
    assert_eq!(read(&pids, "pids.max"), "100");
    // The posture report says what bounds the sandbox.
    let posture = sandbox.info().await.unwrap().posture.unwrap();
    assert!(
        posture.cgroup.starts_with("cgroup v") && posture.cgroup.contains("pids 100"),
        "{}",
        posture.cgroup
    );

    sandbox.shutdown().await;
    for dir in [&memory, &cpu, &pids] {
        assert!(!dir.exists(), "{} is left after shutdown", dir.display());
    }
}

#[tokio::test]
async fn a_memory_bomb_is_killed_by_its_cgroup_while_another_tenant_keeps_answering() {
    // The bomb's sandbox may map 8 GiB (RLIMIT_AS) but use only 512 MiB as a whole: the
    // allocation succeeds and the kernel kills it once it is touched past the bound.
    let mut bomb_config = bounded(ProcessSettings {
        memory_bytes: 512 << 20,
        ..ProcessSettings::default()
    });
    bomb_config.models.push(fixture("hostile/memory_bomb"));
    let bombed = Sandbox::start(bomb_config)
        .await
        .expect("the bomb's sandbox starts");
    let other = Sandbox::start(config(RuntimeKind::Process))
        .await
        .expect("the other tenant's sandbox starts");
    let half = other.load_model(fixture("half_plus_two")).await.unwrap();
    let bomb = bombed
        .load_model(fixture("hostile/memory_bomb"))
        .await
        .unwrap();

    // 2^28 floats: 1 GiB, twice the bound, and well within the address space.
    let (exploded, answered) = tokio::join!(
        bomb.predict([("elements", Tensor::scalar(1i64 << 28))]),
        half.predict(x(&[1.0, 2.0]))
    );
    let error = exploded.expect_err("the bomb is stopped");
    match &error {
        Error::WorkerExited { status, .. } => assert!(status.oom, "{error}"),
        other => panic!("the bomb was not killed for want of memory: {other}"),
    }
    assert!(error.to_string().contains("out of memory"), "{error}");
    let y = answered.expect("the other tenant answers meanwhile");
    assert_eq!(y["y"].to_vec::<f32>().unwrap(), vec![2.5, 3.0]);
    let y = half.predict(x(&[5.0])).await.expect("and afterwards");
    assert_eq!(y["y"].to_vec::<f32>().unwrap(), vec![4.5]);

    bombed.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_cpu_hog_is_held_to_its_quota_while_another_tenant_answers_within_its_deadlines() {
    let mut hog_config = bounded(ProcessSettings {
        cpus: 0.5,
        ..ProcessSettings::default()
    });
    hog_config.models.push(fixture("busy_loop"));
    let hog = Sandbox::start(hog_config)
        .await
        .expect("the hog's sandbox starts");
    let other = Sandbox::start(config(RuntimeKind::Process))
        .await
        .expect("the other tenant's sandbox starts");
    let busy = hog.load_model(fixture("busy_loop")).await.unwrap();
    let half = other.load_model(fixture("half_plus_two")).await.unwrap();
    let cpu = cgroup_dir(worker_host_pid(&hog).expect("the hog's worker"), "cpu");
    let throttled = || {
        read(&cpu, "cpu.stat")
            .lines()
            .find_map(|l| l.strip_prefix("nr_throttled ")?.parse::<u64>().ok())
            .expect("nr_throttled in cpu.stat")
    };
    let before = throttled();

    // Two runs that never end by themselves keep the hog's worker busy for 4 s...
    let spin = || {
        let busy = busy.clone();
        tokio::spawn(async move {
            let endless = Predict::new([("n", Tensor::scalar(1i64 << 60))]);
            busy.predict_with(endless.deadline(Duration::from_secs(4)))
                .await
        })
    };
    let hogs = [spin(), spin()];
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ...while the other tenant's calls each answer within a deadline of their own.
    for n in 0..20 {
        let call = Predict::new(x(&[n as f32])).deadline(Duration::from_secs(2));
        let y = half
            .predict_with(call)
            .await
            .expect("answered within its deadline");
        assert_eq!(y["y"].to_vec::<f32>().unwrap(), vec![n as f32 / 2.0 + 2.0]);
    }
    // The kernel holds the hog to its half CPU: its cgroup is throttled.
    assert!(
        throttled() > before,
        "the hog's cgroup was never throttled ({})",
        read(&cpu, "cpu.stat")
    );
    for hogging in hogs {
        let ended = hogging.await.unwrap();
        assert!(
            matches!(ended, Err(Error::DeadlineExceeded { .. })),
            "{ended:?}"
        );
    }
    hog.shutdown().await;
    other.shutdown().await;
}

/// `tfsandbox run` of half_plus_two in a mount namespace where /sys/fs/cgroup is gone, as on a
/// host that offers no cgroup; (succeeded, stdout, stderr).
fn run_without_cgroups(extra: &[&str]) -> (bool, String, String) {
    let tfsandbox = tfsandbox_checks::tfsandbox();
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"umount -l /sys/fs/cgroup && exec "$0" "$@""#)
        .arg(&tfsandbox)
        .args(["run", "--model"])
        .arg(fixture("half_plus_two"))
        .args(["--input", "x=[[1.0]]"])
        .args(extra)
        .output()
        .expect("unshare runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_a_cgroup_a_start_fails_closed_unless_running_without_is_allowed() {
    let (ok, _, stderr) = run_without_cgroups(&[]);
    assert!(!ok, "a sandbox started with no cgroup: {stderr}");
    assert!(
        stderr.contains("no cgroup to bound its memory, CPUs and pids")
            && stderr.contains("--allow-weaker cgroup"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = run_without_cgroups(&["--allow-weaker", "cgroup"]);
    assert!(ok, "allowed to run without a cgroup, it did not: {stderr}");
    assert_eq!(stdout.trim(), r#"{"y":[[2.5]]}"#);
}
