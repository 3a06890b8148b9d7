//! The sandbox's pid 1: builds the root, starts the worker as its child, and stays until the
//! worker ends. It holds no pipe of the host's but stderr, and reads nothing the worker writes.

use std::io::Write;
use std::os::fd::OwnedFd;

use super::{become_worker, failed, fork, release_stdio, root, Never};
use crate::error::{JailerError, Result};
use crate::plan::Plan;

pub fn run(plan: &Plan, report: OwnedFd) -> Result<Never> {
    super::privileges::die_with_parent()?;
    root::build(plan)?;
    rustix::system::sethostname(b"tfsandbox").map_err(JailerError::sys("sethostname"))?;
    let worker = match fork()? {
        None => {
            drop(report);
            let error = match become_worker(plan) {
                Ok(never) => match never {},
                Err(error) => error,
            };
            failed(&error)
        }
        Some(worker) => worker,
    };
    release_stdio()?;
    // The worker shares this uid: without this it could open /proc/1/mem or /proc/1/fd.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(JailerError::sys("PR_SET_DUMPABLE"))?;
    // Reaps whatever ends (the worker cannot fork, but pid 1 takes every orphan) until the worker
    // does.
    let status = loop {
        let mut status = 0;
        // SAFETY: plain waitpid on any child; `status` outlives the call.
        let waited = unsafe { libc::waitpid(-1, &mut status, 0) };
        if waited == worker {
            break status;
        }
        if waited < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(JailerError::Sys {
                    what: "waitpid",
                    source: error,
                });
            }
        }
    };
    // Nothing of the sandbox outlives its worker.
    // SAFETY: kill(-1) from a namespace's init signals every other process of the namespace.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    let _ = std::fs::File::from(report).write_all(&status.to_ne_bytes());
    std::process::exit(0)
}
