//! A worker that turns on its host: what a model's author can do with native code inside the
//! sandbox (simulated by a library injected into a copy of the real worker with patchelf, whose
//! constructor runs under the real sandbox), or with protocol bytes alone (the hostile peer).
//! Each test reproduces one attack and asserts the host holds.
//!
//! Memory is measured as this test process's peak RSS: run under nextest, each test is a process
//! of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tfsandbox::{Config, RuntimeKind, Sandbox};
use tfsandbox_checks::{config, copy_dir, each_runtime, fixture};

/// This process's peak resident memory, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

fn hostile_peer() -> PathBuf {
    config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built")
        .with_file_name("tfsandbox-hostile-peer")
}

/// Starts a sandbox around the hostile peer in `mode`; the error the start ends in, and how much
/// this process's peak memory grew meanwhile.
async fn start_against(runtime: RuntimeKind, mode: &str) -> (String, u64) {
    let config = Config {
        worker_path: Some(hostile_peer()),
        worker_log: mode.into(),
        start_timeout: Duration::from_secs(20),
        ..config(runtime)
    };
    let before = peak_rss();
    let started = tokio::time::timeout(Duration::from_secs(90), Sandbox::start(config))
        .await
        .unwrap_or_else(|_| panic!("{mode}: the start hangs"));
    let error = match started {
        Ok(_) => panic!("{mode}: a sandbox started against a peer that speaks no protocol"),
        Err(error) => error.to_string(),
    };
    (error, peak_rss().saturating_sub(before))
}

/// 256 MiB on stderr with no newline: the host holds a bounded line, says it cut it, and a line
/// made to look like the host's own is escaped.
async fn a_log_line_without_end_is_bounded_and_cannot_forge_the_hosts(runtime: RuntimeKind) {
    let (error, grown) = start_against(runtime, "stderr-flood").await;
    assert!(grown < 64 << 20, "the host's memory grew {grown} bytes");
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(error.contains("[line cut: "), "{error}");
    assert!(
        error.contains("\\r\\u{1b}[2K ERROR tfsandbox: forged by the worker"),
        "{error}"
    );
    assert!(
        !error.contains('\r') && !error.contains('\u{1b}'),
        "{error}"
    );
}

/// Pings without end, never reading: the pongs the host owes must not pile up; the worker that
/// does this is killed.
async fn a_worker_that_floods_pings_and_never_reads_is_killed(runtime: RuntimeKind) {
    let (error, grown) = start_against(runtime, "ping-flood").await;
    assert!(grown < 160 << 20, "the host's memory grew {grown} bytes");
    assert!(error.contains("it is not reading"), "{error}");
}

each_runtime!(
    a_log_line_without_end_is_bounded_and_cannot_forge_the_hosts,
    a_worker_that_floods_pings_and_never_reads_is_killed,
);

/// The constructor of the injected library: native code, before the worker's `main`.
const INJECTED: &str = r#"
#include <sys/prctl.h>
__attribute__((constructor)) static void attack(void) {
    /* Outlive the sandbox: no signal when the parent dies. */
    prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    /* Pass for another program in the host's ps. */
    prctl(PR_SET_NAME, "sshd", 0, 0, 0);
}
"#;

/// A copy of the real worker in `dir` that loads a library with [`INJECTED`] first, built with
/// gcc and patchelf.
fn injected_worker(dir: &Path) -> PathBuf {
    let real = config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built");
    let source = dir.join("attack.c");
    std::fs::write(&source, INJECTED).unwrap();
    let library = dir.join("libtfsandbox_attack.so");
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source));
    let worker = dir.join("tfsandbox-worker");
    std::fs::copy(&real, &worker).unwrap();
    let runpath = String::from_utf8(
        Command::new("patchelf")
            .arg("--print-rpath")
            .arg(&worker)
            .output()
            .expect("patchelf (Debian's package) is installed")
            .stdout,
    )
    .unwrap();
    // Two runs: Debian's patchelf mixes the two changes up when given both at once.
    run(Command::new("patchelf")
        .arg("--set-rpath")
        .arg(format!("{}:{}", dir.display(), runpath.trim()))
        .arg(&worker));
    run(Command::new("patchelf")
        .args(["--add-needed", "libtfsandbox_attack.so"])
        .arg(&worker));
    // The jailer is found beside the worker.
    std::fs::copy(
        real.with_file_name("tfsandbox-jailer"),
        dir.join("tfsandbox-jailer"),
    )
    .unwrap();
    worker
}

fn run(command: &mut Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every process of the sandboxes whose jailer was handed files from `dir`: the jailers (whose
/// command lines name those files), the sandboxes' pid 1 (forks of the jailer) and the workers
/// (their children), each with its command line, which tells a reused pid apart.
fn sandbox_processes(dir: &Path) -> Vec<(u32, Vec<u8>)> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let cmdline = |pid: u32| std::fs::read(format!("/proc/{pid}/cmdline")).ok();
    let mut found: Vec<(u32, Vec<u8>)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, cmdline(pid)?)))
        .filter(|(_, c)| c.windows(needle.len()).any(|w| w == needle))
        .collect();
    let mut next = 0;
    while next < found.len() {
        let pid = found[next].0;
        next += 1;
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if !found.iter().any(|(p, _)| *p == child) {
                if let Some(c) = cmdline(child) {
                    found.push((child, c));
                }
            }
        }
    }
    found
}

/// Which of `processes` still run (a zombie has an empty command line).
fn still_running(processes: &[(u32, Vec<u8>)]) -> Vec<u32> {
    processes
        .iter()
        .filter(|(pid, c)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|now| now == *c && !c.is_empty())
        })
        .map(|(pid, _)| *pid)
        .collect()
}

/// The host is SIGKILLed while serving a worker that cleared its own parent-death signal and
/// renamed itself: every process of its sandbox still goes, and its name never changed.
#[test]
fn a_worker_that_clears_its_parent_death_signal_dies_with_a_killed_host() {
    let dir = tempfile::tempdir().unwrap();
    let worker = injected_worker(dir.path());
    let base = dir.path().join("models");
    copy_dir(&fixture("half_plus_two"), &base.join("1"));
    let tfsandbox = tfsandbox_checks::tfsandbox();
    let mut host = Command::new(tfsandbox)
        .args(["serve", "--port", "0", "--model_base_path"])
        .arg(&base)
        .arg("--worker")
        .arg(&worker)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tfsandbox serve starts");
    // Serving once the model is loaded.
    let mut stdout = std::io::BufReader::new(host.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !line.contains("listening on") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(read > 0 && Instant::now() < deadline, "serve ended early");
    }
    let processes = sandbox_processes(dir.path());
    // The workers run the loader on the worker's path inside the sandbox.
    let inside = tfsandbox::closure::WORKER_PATH.as_bytes();
    let names: Vec<String> = processes
        .iter()
        .filter(|(_, c)| c.windows(inside.len()).any(|w| w == inside))
        // Not the jailer or the sandbox's pid 1, whose command line is the jailer's.
        .filter(|(_, c)| {
            !c.split(|&b| b == 0)
                .next()
                .unwrap_or_default()
                .ends_with(b"tfsandbox-jailer")
        })
        .map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default())
        .collect();

    host.kill().expect("SIGKILL the host");
    host.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = still_running(&processes);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = still_running(&processes);
    }
    for pid in &left {
        // Not left running for the next test.
        // SAFETY: kill with a plain pid and signal.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "the sandbox outlived its killed host: {left:?} of {processes:?}"
    );
    assert!(!names.is_empty(), "no worker among {processes:?}");
    assert!(
        names.iter().all(|n| n.trim() != "sshd"),
        "the worker renamed itself: {names:?}"
    );
}
