//! The policy as BPF, built with seccompiler: what the jailer and the docker init install.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::Policy;
use crate::{
    ALLOWED_IOCTLS, ALLOWED_PRCTLS, ALLOWED_SYSCALLS, CLONE_MASK, CLONE_REQUIRED, ENOSYS_SYSCALLS,
    NVIDIA_IOCTL_TYPE, NVIDIA_IOCTL_TYPE_MASK, UVM_IOCTLS, UVM_IOCTL_MASK,
};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("system call '{0}' has no number on this architecture")]
    UnknownSyscall(String),
    #[error("seccomp filter: {0}")]
    Filter(String),
}

/// The number of a system call on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    name.parse::<syscalls::Sysno>().ok().map(|n| n.id() as i64)
}

fn number(name: &str) -> Result<i64, PolicyError> {
    syscall_number(name).ok_or_else(|| PolicyError::UnknownSyscall(name.to_string()))
}

fn filter_error(error: impl std::fmt::Display) -> PolicyError {
    PolicyError::Filter(error.to_string())
}

fn target_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        TargetArch::x86_64
    }
}

/// The allowlist as BPF: anything else returns EPERM; a call made under a foreign architecture
/// (i386 via int 0x80, say) kills the process.
pub fn allowlist_program() -> Result<BpfProgram, PolicyError> {
    allowlist_program_for(Policy::Cpu)
}

/// [`allowlist_program`] for `policy`.
pub fn allowlist_program_for(policy: Policy) -> Result<BpfProgram, PolicyError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in ALLOWED_SYSCALLS {
        rules.insert(number(name)?, vec![]);
    }
    let threads_only = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(CLONE_MASK),
        CLONE_REQUIRED,
    )
    .map_err(filter_error)?;
    rules.insert(
        number("clone")?,
        vec![SeccompRule::new(vec![threads_only]).map_err(filter_error)?],
    );
    let ioctls = ALLOWED_IOCTLS
        .iter()
        .map(|&request| {
            let condition =
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                    .map_err(filter_error)?;
            SeccompRule::new(vec![condition]).map_err(filter_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prctls = ALLOWED_PRCTLS
        .iter()
        .map(|&option| {
            let condition =
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, option)
                    .map_err(filter_error)?;
            SeccompRule::new(vec![condition]).map_err(filter_error)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(number("prctl")?, prctls);
    let mut ioctls = ioctls;
    if policy == Policy::Gpu {
        ioctls.extend(gpu_ioctl_rules()?);
    }
    rules.insert(number("ioctl")?, ioctls);
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        target_arch(),
    )
    .map_err(filter_error)?;
    allow.try_into().map_err(filter_error)
}

fn gpu_ioctl_rules() -> Result<Vec<SeccompRule>, PolicyError> {
    let condition = |op, value| {
        SeccompCondition::new(1, SeccompCmpArgLen::Dword, op, value).map_err(filter_error)
    };
    let mut rules = vec![
        SeccompRule::new(vec![condition(
            SeccompCmpOp::MaskedEq(NVIDIA_IOCTL_TYPE_MASK),
            NVIDIA_IOCTL_TYPE,
        )?])
        .map_err(filter_error)?,
        SeccompRule::new(vec![condition(SeccompCmpOp::MaskedEq(UVM_IOCTL_MASK), 0)?])
            .map_err(filter_error)?,
    ];
    for &request in UVM_IOCTLS {
        rules.push(
            SeccompRule::new(vec![condition(SeccompCmpOp::Eq, request)?]).map_err(filter_error)?,
        );
    }
    Ok(rules)
}

/// A second program, for what must fail with ENOSYS rather than EPERM (`clone3`); everything
/// else it passes on to the allowlist. Installed after it, so the kernel checks it first.
pub fn enosys_program() -> Result<BpfProgram, PolicyError> {
    let mut rules = BTreeMap::new();
    for name in ENOSYS_SYSCALLS {
        rules.insert(number(name)?, vec![]);
    }
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch(),
    )
    .map_err(filter_error)?
    .try_into()
    .map_err(filter_error)
}
