//! The escape-attempt harness: starts `tfsandbox-probe` through a runtime exactly as that runtime
//! starts the worker (same closure rules, same jailer or container settings) and collects how each
//! of its attempts ended.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tfsandbox::runtime::Launch;
use tfsandbox::{Config, ProcessSettings, RuntimeConfig, RuntimeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{config, fixture};

/// One attempt: what was tried, whether the sandbox stopped it, and how (errno, or where it
/// stopped).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: String,
    pub denied: bool,
    pub detail: String,
}

/// What a probe run produced.
#[derive(Debug)]
pub struct ProbeRun {
    pub attempts: Vec<Attempt>,
    /// How the probe process ended ("exit status: 0", "signal: 31 (SIGSYS)").
    pub status: tfsandbox::WorkerExit,
}

/// The probe binary, built beside the worker.
pub fn probe_path() -> PathBuf {
    config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built")
        .with_file_name("tfsandbox-probe")
}

/// A file on the host the sandbox must not be able to read; removed when dropped, panic or not.
pub fn host_secret() -> tempfile::TempPath {
    let mut file = tempfile::Builder::new()
        .prefix("tfsandbox-secret-")
        .tempfile()
        .expect("create the secret");
    std::io::Write::write_all(&mut file, b"the host's secret\n").expect("write the secret");
    file.into_temp_path()
}

/// Runs the probe in `mode` ("all", "i386", "cpu") under `config`'s runtime and settings.
pub async fn run_probe(config: &Config, mode: &str) -> ProbeRun {
    // The worker's exact runtime and settings, with one model mounted.
    let config = Config {
        models: vec![fixture("half_plus_two")],
        ..config.clone()
    };
    let runtime = tfsandbox::runtime::for_config(&config)
        .await
        .expect("the runtime");
    let secret = host_secret();
    // The host listens on its own loopback: the probe must not reach it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().unwrap().port();
    let launch = Launch {
        sandbox_id: format!("escape-{}-{mode}", std::process::id()),
        worker_path: probe_path(),
        worker_log: "info".into(),
        max_message_bytes: tfsandbox::Config::default().max_message_bytes,
        session: Default::default(),
        start_timeout: tfsandbox::Config::default().start_timeout,
    };
    let mut probe = runtime.start(&launch).await.expect("the probe starts");
    let targets = json!({
        "mode": mode,
        "secret": secret.display().to_string(),
        "model": "/models/half_plus_two",
        "host_pid": std::process::id(),
        "port": port,
    });
    probe
        .stdin
        .write_all(format!("{targets}\n").as_bytes())
        .await
        .expect("send targets");
    probe.stdin.flush().await.expect("send targets");

    let mut output = String::new();
    let mut errors = String::new();
    let collected = async {
        let _ = tokio::join!(
            probe.stdout.read_to_string(&mut output),
            probe.stderr.read_to_string(&mut errors)
        );
    };
    if tokio::time::timeout(Duration::from_secs(120), collected)
        .await
        .is_err()
    {
        probe.control.kill().await;
    }
    let status = probe.control.wait().await;
    drop(secret);
    if !errors.trim().is_empty() {
        eprintln!("probe stderr: {}", errors.trim());
    }
    let attempts = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| Attempt {
            attempt: v["attempt"].as_str().unwrap_or_default().to_string(),
            denied: v["denied"].as_bool().unwrap_or(false),
            detail: v["detail"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    ProbeRun { attempts, status }
}

/// Every attempt of one runtime: the probe's whole list, then those that may end the process.
pub async fn all_attempts(runtime: RuntimeKind) -> Vec<Attempt> {
    let run = run_probe(&config(runtime), "all").await;
    let mut attempts = run.attempts;
    // A probe that did not finish its list was stopped by something no attempt reported.
    attempts.push(Attempt {
        attempt: "end the probe early".into(),
        denied: run.status.code == Some(0),
        detail: run.status.to_string(),
    });
    attempts.extend(fatal_attempts(runtime).await);
    attempts
}

/// The probe runs that may end the process when the sandbox holds, with the status that proves it.
pub async fn fatal_attempts(runtime: RuntimeKind) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    // x32 calls: refused (EPERM) by the jailer's filter, fatal (SIGSYS) under the engine's.
    let x32 = run_probe(&config(runtime), "x32").await;
    attempts.push(match x32.attempts.into_iter().next() {
        Some(reported) => reported,
        None => Attempt {
            attempt: "x32 system call".into(),
            denied: x32.status.signal == Some(libc::SIGSYS),
            detail: x32.status.to_string(),
        },
    });
    let i386 = run_probe(&config(runtime), "i386").await;
    let killed = i386.attempts.is_empty() && i386.status.signal == Some(libc::SIGSYS);
    let returned = i386.attempts.into_iter().next().map(|a| a.detail);
    attempts.push(match returned {
        // The probe asked for i386 getpid with rdi = -1: EBADF means the call ran as the x86-64
        // call of that number, writev(-1, ..), which is what gVisor's kernel does with int 0x80
        // (the ptrace platform stops it before the host kernel runs it); a pid would mean it
        // ran as i386 getpid.
        Some(detail) if runtime == RuntimeKind::Gvisor && detail == "returned -9" => Attempt {
            attempt: "i386 system call".into(),
            denied: true,
            detail: format!("contained: {detail}, run by gVisor's kernel as x86-64 writev(-1)"),
        },
        Some(detail) => Attempt {
            attempt: "i386 system call".into(),
            denied: false,
            detail,
        },
        None => Attempt {
            attempt: "i386 system call".into(),
            denied: killed,
            detail: i386.status.to_string(),
        },
    });

    if runtime == RuntimeKind::Process {
        // A CPU limit is a setting (none by default: a long-lived worker accumulates CPU time);
        // with one set, a busy loop past it ends by SIGXCPU, or SIGKILL at the hard limit.
        let limited = Config {
            runtime: RuntimeConfig::Process(ProcessSettings {
                cpu_seconds: Some(1),
                ..crate::process_settings()
            }),
            ..config(runtime)
        };
        let cpu = run_probe(&limited, "cpu").await;
        let stopped = matches!(cpu.status.signal, Some(libc::SIGXCPU | libc::SIGKILL));
        attempts.push(Attempt {
            attempt: "busy loop past the CPU limit".into(),
            denied: stopped,
            detail: cpu.status.to_string(),
        });
    }
    attempts
}
