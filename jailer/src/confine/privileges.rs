//! Identity and privilege: the parent-death signal, nobody's ids, no capability, the rlimits and
//! the seccomp allowlist. Every call is checked; a credential that did not change is an error.

use rustix::process::{Resource, Rlimit};

use crate::error::{JailerError, Result};
use crate::plan::{Limit, Plan, NOBODY};
use crate::seccomp;

/// SIGKILL when the parent goes. The kernel clears this on fork and on every change of
/// credentials, so it is set again after each.
pub fn die_with_parent() -> Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(JailerError::sys("PR_SET_PDEATHSIG"))?;
    // The parent may have gone before the line above took effect. (A namespace's pid 1 sees no
    // parent at all: its parent lives outside; there the signal alone must do.)
    let is_namespace_init = rustix::process::getpid().as_raw_nonzero().get() == 1;
    if !is_namespace_init && rustix::process::getppid().is_none() {
        return Err(JailerError::ParentGone);
    }
    Ok(())
}

/// Files created while building the root must belong to an id the namespace maps (the host's
/// root, say, is not mapped); the capabilities stay until privileges are dropped.
pub fn use_nobody_for_files() -> Result<()> {
    // setfsuid/setfsgid report no error; asking with an invalid id (-1) returns the current one.
    // SAFETY: plain syscalls with integer arguments on this single thread.
    let (gid, uid) = unsafe {
        libc::setfsgid(NOBODY);
        libc::setfsuid(NOBODY);
        (
            libc::setfsgid(u32::MAX) as u32,
            libc::setfsuid(u32::MAX) as u32,
        )
    };
    for (what, got) in [("setfsgid", gid), ("setfsuid", uid)] {
        if got != NOBODY {
            return Err(JailerError::Credentials {
                what,
                wanted: NOBODY,
                got,
            });
        }
    }
    Ok(())
}

/// Becomes nobody with no capability at all, no way to gain one, and the plan's limits.
pub fn drop_all(plan: &Plan) -> Result<()> {
    for (limit, value) in &plan.limits {
        let resource = match limit {
            Limit::AddressSpace => Resource::As,
            Limit::Core => Resource::Core,
            Limit::CpuSeconds => Resource::Cpu,
            Limit::FileSize => Resource::Fsize,
            Limit::OpenFiles => Resource::Nofile,
            Limit::Processes => Resource::Nproc,
        };
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: Some(*value),
                maximum: Some(*value),
            },
        )
        .map_err(JailerError::sys(limit.name()))?;
    }
    empty_bounding_set()?;
    rustix::thread::clear_ambient_capability_set()
        .map_err(JailerError::sys("clearing ambient capabilities"))?;
    let gid = rustix::process::Gid::from_raw(NOBODY);
    let uid = rustix::process::Uid::from_raw(NOBODY);
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(JailerError::sys("setresgid"))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(JailerError::sys("setresuid"))?;
    let got = rustix::process::getuid().as_raw();
    if got != NOBODY {
        return Err(JailerError::Credentials {
            what: "setresuid",
            wanted: NOBODY,
            got,
        });
    }
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: rustix::thread::CapabilitySet::empty(),
            permitted: rustix::thread::CapabilitySet::empty(),
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
    .map_err(JailerError::sys("dropping capabilities"))?;
    rustix::thread::set_no_new_privs(true).map_err(JailerError::sys("no_new_privs"))?;
    Ok(())
}

/// Only while the capability to do so lasts: empties the bounding set, up to the kernel's last
/// capability (EINVAL past it).
fn empty_bounding_set() -> Result<()> {
    for capability in 0..64 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong, 0, 0, 0) } != 0
        {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) && capability > 0 {
                return Ok(());
            }
            return Err(JailerError::Sys {
                what: "PR_CAPBSET_DROP",
                source: error,
            });
        }
    }
    Ok(())
}

/// The allowlist on every thread (there is one now; the worker's come later and inherit it).
pub fn install_seccomp(plan: &Plan) -> Result<()> {
    let allow = seccomp::allowlist_program_for(plan.policy())?;
    let enosys = seccomp::enosys_program()?;
    seccompiler::apply_filter_all_threads(&allow)?;
    seccompiler::apply_filter_all_threads(&enosys)?;
    Ok(())
}
