//! The jailer's run, in the order it happens. Three processes take part:
//! 1. the **jailer** the host started: it dies with the host (PR_SET_PDEATHSIG), unshares the
//!    user, mount, pid, net, ipc, uts and cgroup namespaces, waits while the host writes its id
//!    maps (65534 inside), forks the namespace's pid 1, and reports how the worker ended as its
//!    own end;
//! 2. **pid 1**, the namespace's init: it builds the root (see `root`), forks the worker, and
//!    stays. It dies with the jailer, and the kernel then kills every process of the namespace.
//!    The worker can clear its own parent-death signal but not this one, and cannot signal pid 1
//!    (the kernel drops signals to a namespace's init that it set no handler for, and Landlock
//!    scopes signals to the worker's own domain). When the worker ends, pid 1 kills whatever is
//!    left and hands the worker's status up;
//! 3. the **worker**: it becomes 65534 with no capability and the plan's rlimits, applies
//!    Landlock and the seccomp allowlist, and execs the loader.

mod init;
mod landlock;
mod privileges;
pub mod root;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::thread::UnshareFlags;

use crate::error::{JailerError, Result};
use crate::plan::{Plan, HANDSHAKE_ASK, HANDSHAKE_GO};

pub enum Never {}

/// Confines and starts the worker that `plan` describes; returns only on failure.
pub fn run(plan: &Plan) -> Result<Never> {
    privileges::die_with_parent()?;
    close_inherited_fds(&plan.tree_fds())?;
    let namespaces = UnshareFlags::NEWUSER
        | UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWNET
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWCGROUP;
    // SAFETY: no CLONE_FILES-like flag is involved; only namespaces are unshared.
    unsafe { rustix::thread::unshare_unsafe(namespaces) }.map_err(JailerError::sys(
        "unshare(user, mount, pid, net, ipc, uts, cgroup)",
    ))?;
    handshake()?;
    privileges::use_nobody_for_files()?;
    // A change of credentials clears the parent-death signal: set it again.
    privileges::die_with_parent()?;
    // Pid 1 reports the worker's wait status here; close-on-exec, so the worker never holds it.
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(JailerError::sys("pipe"))?;
    // The new pid namespace takes effect for children: pid 1 does the rest.
    match fork()? {
        None => {
            drop(report_read);
            let error = match init::run(plan, report_write) {
                Ok(never) => match never {},
                Err(error) => error,
            };
            failed(&error)
        }
        Some(init) => {
            drop(report_write);
            // Only pid 1 attaches the model trees.
            for fd in plan.tree_fds() {
                // SAFETY: the host handed this descriptor over for the plan, and nothing here
                // holds it.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            relay_exit(init, report_read)
        }
    }
}

/// Prints the error and leaves without running exit handlers (the caller may be a fork).
pub fn failed(error: &JailerError) -> ! {
    eprintln!("tfsandbox-jailer: {error}");
    // SAFETY: _exit ends the process at once; nothing else runs.
    unsafe { libc::_exit(i32::from(crate::plan::FAILED)) }
}

/// `Some(child)` in the parent, `None` in the child.
fn fork() -> Result<Option<libc::pid_t>> {
    // SAFETY: every caller is single-threaded, so the child may do anything after fork.
    match unsafe { libc::fork() } {
        -1 => Err(JailerError::Sys {
            what: "fork",
            source: std::io::Error::last_os_error(),
        }),
        0 => Ok(None),
        child => Ok(Some(child)),
    }
}

/// Closes every descriptor above stderr except `keep` (sorted): the model trees of the plan.
fn close_inherited_fds(keep: &[i32]) -> Result<()> {
    let mut from = 3u32;
    for &fd in keep.iter().chain([&-1]) {
        let to = if fd < 0 { u32::MAX } else { fd as u32 - 1 };
        if from <= to {
            // SAFETY: closes descriptors this process does not use; nothing holds them.
            let closed = unsafe { libc::syscall(libc::SYS_close_range, from, to, 0u32) };
            if closed != 0 {
                return Err(JailerError::Sys {
                    what: "close_range",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        if fd >= 0 {
            from = fd as u32 + 1;
        }
    }
    Ok(())
}

/// Asks the host for id maps (one byte out) and waits until they are written (one byte in).
/// Only the host, outside, may map ids other than its own.
fn handshake() -> Result<()> {
    // SAFETY: fd 1 is the pipe the host gave; ManuallyDrop keeps it open.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(1) });
    // SAFETY: as fd 1, for fd 0.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(0) });
    stdout
        .write_all(&[HANDSHAKE_ASK])
        .map_err(|e| JailerError::Handshake(e.to_string()))?;
    let mut answer = [0u8; 1];
    stdin
        .read_exact(&mut answer)
        .map_err(|e| JailerError::Handshake(format!("the host did not answer: {e}")))?;
    if answer != [HANDSHAKE_GO] {
        return Err(JailerError::Handshake("the host refused".into()));
    }
    Ok(())
}

/// Points stdin and stdout at /dev/null: only the worker speaks the protocol, and its pipes must
/// close when it does.
fn release_stdio() -> Result<()> {
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(JailerError::path("opening", "/dev/null"))?;
    rustix::stdio::dup2_stdin(&null).map_err(JailerError::sys("dup2 stdin"))?;
    rustix::stdio::dup2_stdout(&null).map_err(JailerError::sys("dup2 stdout"))?;
    Ok(())
}

/// Waits for pid 1 and ends as the worker did, so the host sees the worker's status. A pid 1
/// that died before reporting (killed with the namespace) is reported as itself.
fn relay_exit(init: libc::pid_t, report: OwnedFd) -> Result<Never> {
    release_stdio()?;
    let status = wait_for(init)?;
    let mut reported = [0u8; 4];
    let status = match fs::File::from(report).read_exact(&mut reported) {
        Ok(()) => i32::from_ne_bytes(reported),
        Err(_) => status,
    };
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action, then dying of the same signal.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

/// waitpid, retried on EINTR; the raw wait status.
fn wait_for(pid: libc::pid_t) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid; `status` outlives the call.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid || (pid == -1 && waited > 0) {
            return Ok(status);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(JailerError::Sys {
                what: "waitpid",
                source: error,
            });
        }
    }
}

/// The worker's last steps: its identity, Landlock, seccomp, then the loader.
fn become_worker(plan: &Plan) -> Result<Never> {
    privileges::die_with_parent()?;
    let landlock = landlock::restrict(plan)?;
    privileges::drop_all(plan)?;
    // Last, since every change of credentials above cleared it.
    privileges::die_with_parent()?;
    privileges::install_seccomp(plan)?;

    let c_string = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| JailerError::Nul(String::from_utf8_lossy(bytes).into()))
    };
    let args: Vec<CString> = plan
        .command
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // The worker's environment: what the host gave for it (every TFSANDBOX_ variable; the host
    // starts the jailer with nothing else) and what was applied, nothing more.
    let env: Vec<CString> = std::env::vars_os()
        .filter(|(name, _)| name.as_encoded_bytes().starts_with(b"TFSANDBOX_"))
        .map(|(name, value)| [name.as_encoded_bytes(), b"=", value.as_encoded_bytes()].concat())
        .chain([format!("TFSANDBOX_LANDLOCK={landlock}").into_bytes()])
        .map(|e| c_string(&e))
        .collect::<Result<_>>()?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are null-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(args[0].as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(JailerError::Exec {
        path: plan.command[0].clone().into(),
        source: std::io::Error::last_os_error(),
    })
}
