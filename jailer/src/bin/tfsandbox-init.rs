//! tfsandbox-init: pid 1 of a docker sandbox, so that the worker's lifetime does not rest on the
//! worker's good will.
//!
//! `tfsandbox-init --seccomp cpu|gpu -- PROGRAM ARGS...` starts PROGRAM (the worker) as its only
//! child and relays the container's attached stdin to it through a pipe of its own. When the
//! attach stream ends (the host closed it, or died), it kills the worker and exits, which ends the
//! container. It exits with the worker's status (128 + N for a signal N, as the engine reports).
//!
//! The worker never holds the attached stdin: a process that held it could open another write end
//! through `/proc/self/fd/0` and so hide the hang-up forever. The init is not dumpable (so the
//! worker, under the same uid, can neither ptrace it nor open its `/proc/1/fd`), and it handles no
//! signal: a signal from inside its pid namespace to a pid 1 without a handler is dropped.
//!
//! The engine's seccomp profile applies to the init too, so it is the worker's allowlist plus the
//! few calls the init itself makes (fork, wait4, kill, splice, pidfd_open:
//! `tfsandbox_jailer::seccomp::docker_init_profile_for`); the child installs the worker's exact
//! allowlist (the same programs the process runtime's jailer installs) just before exec, so the
//! worker runs under both filters and gains nothing.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};
use rustix::process::{
    kill_process, pidfd_open, set_dumpable_behavior, waitpid, DumpableBehavior, Pid, PidfdFlags,
    Signal, WaitOptions, WaitStatus,
};
use tfsandbox_jailer::seccomp::{allowlist_program_for, enosys_program, Policy};

/// The most bytes one splice moves; the pipe holds at most this much anyway.
const CHUNK: usize = 1 << 20;
/// How often orphans (there should be none: the worker cannot fork) are reaped without a wake-up.
const REAP_INTERVAL: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("tfsandbox-init: {message}");
            ExitCode::from(125)
        }
    }
}

/// `--seccomp cpu|gpu -- PROGRAM ARGS...`
fn parse(args: &[OsString]) -> Result<(Policy, &[OsString]), String> {
    const USAGE: &str = "usage: tfsandbox-init --seccomp cpu|gpu -- PROGRAM ARGS...";
    let [flag, policy, dashes, command @ ..] = args else {
        return Err(USAGE.into());
    };
    if flag != "--seccomp" || dashes != "--" || command.is_empty() {
        return Err(USAGE.into());
    }
    let policy = match policy.to_str() {
        Some("cpu") => Policy::Cpu,
        Some("gpu") => Policy::Gpu,
        _ => return Err(format!("--seccomp {policy:?}: expected cpu or gpu")),
    };
    Ok((policy, command))
}

fn run() -> Result<u8, String> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let (policy, command) = parse(&args)?;
    // Built before the fork: the child only installs them.
    let allow = allowlist_program_for(policy).map_err(|e| e.to_string())?;
    let enosys = enosys_program().map_err(|e| e.to_string())?;

    let (worker_stdin, relay) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    // Only our end: the worker's read end keeps its own flags.
    rustix::fs::fcntl_setfl(&relay, rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| format!("fcntl: {e}"))?;

    let mut worker = Command::new(&command[0]);
    worker.args(&command[1..]).stdin(Stdio::from(worker_stdin));
    // SAFETY: runs in the forked child of this single-threaded process, between fork and exec;
    // it only makes the prctl and seccomp calls that install the prebuilt programs. The enosys
    // program goes last, so the kernel consults it first (clone3 answers ENOSYS, not EPERM).
    unsafe {
        worker.pre_exec(move || {
            seccompiler::apply_filter(&allow).map_err(std::io::Error::other)?;
            seccompiler::apply_filter(&enosys).map_err(std::io::Error::other)?;
            Ok(())
        });
    }
    let child = worker
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", command[0]))?;
    let pid = Pid::from_raw(child.id() as i32).ok_or("the worker has no pid")?;
    // The child is ours and unreaped, so its pid cannot be reused before this.
    let exited = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open: {e}"))?;
    let code = relay_until_the_end(pid, relay, &exited);
    Ok(code)
}

/// What ended the relay.
enum End {
    /// The worker exited on its own, with this status.
    Exited(WaitStatus),
    /// The attach stream ended (or the relay failed): the worker is killed.
    Hangup(Option<String>),
}

/// Moves the attached stdin into the worker's pipe until either side ends; returns the exit code.
fn relay_until_the_end(pid: Pid, relay: OwnedFd, exited: &OwnedFd) -> u8 {
    let stdin = std::io::stdin();
    let mut relay = Some(relay);
    // The worker's pipe was full at the last splice: wait until it drains before reading more.
    let mut blocked = false;
    let end = loop {
        if let Some(status) = reap(pid) {
            break End::Exited(status);
        }
        let reading = relay.is_some() && !blocked;
        let mut fds = vec![
            // Without POLLIN the hang-up is still reported.
            PollFd::new(
                &stdin,
                if reading {
                    PollFlags::IN
                } else {
                    PollFlags::empty()
                },
            ),
            PollFd::new(exited, PollFlags::IN),
        ];
        if let (Some(out), true) = (&relay, blocked) {
            fds.push(PollFd::new(out, PollFlags::OUT));
        }
        match poll(&mut fds, Some(&REAP_INTERVAL)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(error) => break End::Hangup(Some(format!("poll: {error}"))),
        }
        let input = fds[0].revents();
        let output = fds.get(2).map(PollFd::revents);
        drop(fds);
        if output.is_some_and(|o| o.intersects(PollFlags::ERR | PollFlags::HUP)) {
            // The worker closed its stdin; it may still be answering.
            relay = None;
        } else if output.is_some_and(|o| o.contains(PollFlags::OUT)) {
            blocked = false;
        }
        if reading && input.contains(PollFlags::IN) {
            let out = relay.as_ref().expect("reading implies a relay");
            match splice(
                stdin.as_fd(),
                None,
                out,
                None,
                CHUNK,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            ) {
                Ok(0) => break End::Hangup(None),
                Ok(_) | Err(Errno::INTR) => {}
                // Nothing to move: the worker's pipe is full (or the wake-up was spurious).
                Err(Errno::AGAIN) => blocked = true,
                Err(Errno::PIPE) => relay = None,
                Err(error) => break End::Hangup(Some(format!("relaying stdin: {error}"))),
            }
        } else if input.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
            break End::Hangup(None);
        }
    };
    let status = match end {
        End::Exited(status) => status,
        End::Hangup(reason) => {
            if let Some(reason) = reason {
                eprintln!("tfsandbox-init: {reason}; stopping the worker");
            }
            // Fails only if it is already a zombie, which the wait then collects.
            let _ = kill_process(pid, Signal::KILL);
            loop {
                match waitpid(Some(pid), WaitOptions::empty()) {
                    Ok(Some((_, status))) => break status,
                    Err(Errno::INTR) => continue,
                    // Gone already: report the kill.
                    _ => return 128 + libc::SIGKILL as u8,
                }
            }
        }
    };
    exit_code(status)
}

/// Reaps every exited child; the worker's status if it was among them.
fn reap(worker: Pid) -> Option<WaitStatus> {
    let mut found = None;
    while let Ok(Some((pid, status))) = waitpid(None, WaitOptions::NOHANG) {
        if pid == worker {
            found = Some(status);
        }
    }
    found
}

/// The worker's status as an exit code, the way the engine reports a process killed by a signal.
fn exit_code(status: WaitStatus) -> u8 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        _ => 125,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_is_strict() {
        let good = args(&["--seccomp", "gpu", "--", "/w", "a"]);
        let (policy, command) = parse(&good).unwrap();
        assert_eq!(policy, Policy::Gpu);
        assert_eq!(command, &args(&["/w", "a"])[..]);
        for bad in [
            &["--seccomp", "cpu", "--"][..],
            &["--seccomp", "none", "--", "/w"],
            &["--", "/w"],
            &["--seccomp", "cpu", "/w"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
