//! A real `tfsandbox serve` for the serve suites: started, its `listening on` lines read, and
//! stopped as an operator would, killed if the test ends first.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tfsandbox::RuntimeKind;

/// A gRPC channel to the server's Unix socket at `path`.
pub async fn unix_channel(path: &std::path::Path) -> tonic::transport::Channel {
    tfsandbox_serve::client::unix_channel(path)
        .await
        .expect("connect to the Unix socket")
}

/// The server process; killed when the test ends, however it ends.
pub struct Serve {
    child: Child,
    /// The addresses of its `listening on` lines, in order.
    pub listening: Vec<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `tfsandbox serve` on a free loopback port on `runtime`, scanning for new versions every
    /// `poll_seconds` (0: only at start), with `args`.
    pub fn command(runtime: RuntimeKind, poll_seconds: u64, args: &[&OsStr]) -> Command {
        let mut command = Command::new(crate::tfsandbox());
        command
            .args(["serve", "--port", "0", "--file_system_poll_wait_seconds"])
            .arg(poll_seconds.to_string())
            .args(args)
            .args(["--runtime", runtime.name()]);
        command
    }

    /// Starts `command` (a `tfsandbox serve` command line) and returns once it has announced its
    /// listeners, which it does together once every model is loaded.
    pub fn start(mut command: Command) -> Serve {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tfsandbox serve");
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut serve = Serve {
            child,
            listening: Vec::new(),
        };
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        // A short wait after the first line collects the rest.
        let mut wait = Duration::from_secs(180);
        while let Ok(line) = received.recv_timeout(wait) {
            if let Some(address) = line.strip_prefix("listening on ") {
                serve.listening.push(address.to_string());
                wait = Duration::from_millis(500);
            }
        }
        assert!(
            !serve.listening.is_empty(),
            "tfsandbox serve did not start listening"
        );
        serve
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address of the `listening on` line that starts with `prefix` (empty: the first, the
    /// gRPC port).
    pub fn address(&self, prefix: &str) -> String {
        self.listening
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .filter(|a| prefix.is_empty() || !a.is_empty())
            .unwrap_or_else(|| panic!("no 'listening on {prefix}...' in {:?}", self.listening))
            .to_string()
    }

    /// SIGTERM, as an operator would: serve finishes its calls, stops its sandboxes and exits
    /// successfully within a minute. Blocks: from async code, call it off the runtime
    /// (`spawn_blocking`), so clients it drops can close their connections meanwhile.
    pub fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a real pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal serve");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for serve") {
                assert!(status.success(), "serve ended with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
