//! The policy as a BPF program (for the `process` runtime) and as a Docker seccomp profile.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{
    ALLOWED_IOCTLS, ALLOWED_PRCTLS, ALLOWED_SYSCALLS, CLONE_MASK, CLONE_REQUIRED, ENOSYS_SYSCALLS,
    NVIDIA_IOCTL_TYPE, NVIDIA_IOCTL_TYPE_MASK, UVM_IOCTLS, UVM_IOCTL_MASK,
};

/// Which policy: the worker's, or the worker's plus the NVIDIA driver's ioctl requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Cpu,
    Gpu,
}

impl Policy {
    /// The one rule for both runtimes: GPUs handed in mean the GPU list.
    pub fn for_gpus(any: bool) -> Policy {
        if any {
            Policy::Gpu
        } else {
            Policy::Cpu
        }
    }
}

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

/// The same policy in the engine's seccomp profile format (`security_opt: seccomp=<json>`).
pub fn docker_profile() -> String {
    docker_profile_for(Policy::Cpu)
}

/// [`docker_profile`] for `policy`.
pub fn docker_profile_for(policy: Policy) -> String {
    let arch = if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    };
    let names: Vec<String> = ALLOWED_SYSCALLS
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect();
    let mut ioctls: Vec<String> = ALLOWED_IOCTLS
        .iter()
        .chain(if policy == Policy::Gpu { UVM_IOCTLS } else { &[] })
        .map(|r| format!(r#"{{"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{r},"op":"SCMP_CMP_EQ"}}]}}"#))
        .collect();
    if policy == Policy::Gpu {
        // Rules of one syscall are alternatives.
        ioctls.push(format!(
            r#"{{"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{NVIDIA_IOCTL_TYPE_MASK},"valueTwo":{NVIDIA_IOCTL_TYPE},"op":"SCMP_CMP_MASKED_EQ"}}]}}"#
        ));
        ioctls.push(format!(
            r#"{{"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{UVM_IOCTL_MASK},"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}}]}}"#
        ));
    }
    let prctls: Vec<String> = ALLOWED_PRCTLS
        .iter()
        .map(|o| format!(r#"{{"names":["prctl"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{o},"op":"SCMP_CMP_EQ"}}]}}"#))
        .collect();
    let enosys: Vec<String> = ENOSYS_SYSCALLS.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        concat!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":{eperm},"architectures":["{arch}"],"syscalls":["#,
            r#"{{"names":[{names}],"action":"SCMP_ACT_ALLOW"}},"#,
            r#"{{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{mask},"valueTwo":{required},"op":"SCMP_CMP_MASKED_EQ"}}]}},"#,
            r#"{ioctls},"#,
            r#"{prctls},"#,
            r#"{{"names":[{enosys}],"action":"SCMP_ACT_ERRNO","errnoRet":{enosys_errno}}}"#,
            r#"]}}"#
        ),
        eperm = libc::EPERM,
        arch = arch,
        names = names.join(","),
        mask = CLONE_MASK,
        required = CLONE_REQUIRED,
        ioctls = ioctls.join(","),
        prctls = prctls.join(","),
        enosys = enosys.join(","),
        enosys_errno = libc::ENOSYS,
    )
}

/// The profile for a container whose pid 1 is `tfsandbox-init`: [`docker_profile_for`] plus
/// [`crate::INIT_EXTRA_SYSCALLS`] and `clone` of a process (still without namespace flags). Wider
/// than the worker's own list only for the init: its child installs [`allowlist_program_for`] and
/// [`enosys_program`] before exec, and the kernel applies every filter.
pub fn docker_init_profile_for(policy: Policy) -> String {
    let worker = docker_profile_for(policy);
    let rules = worker
        .strip_suffix("]}")
        .expect("the profile ends with its list of rules");
    // A name already allowed without conditions is not listed twice.
    let names: Vec<String> = crate::INIT_EXTRA_SYSCALLS
        .iter()
        .filter(|n| !ALLOWED_SYSCALLS.contains(n))
        .map(|n| format!("\"{n}\""))
        .collect();
    format!(
        concat!(
            r#"{rules},{{"names":[{names}],"action":"SCMP_ACT_ALLOW"}},"#,
            r#"{{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{mask},"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}}]}}"#,
            r#"]}}"#
        ),
        rules = rules,
        names = names.join(","),
        mask = crate::CLONE_NAMESPACE_FLAGS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_name_has_a_number() {
        for name in ALLOWED_SYSCALLS
            .iter()
            .chain(ENOSYS_SYSCALLS)
            .chain(&["clone", "ioctl"])
        {
            assert!(syscall_number(name).is_some(), "{name}");
        }
    }

    #[test]
    fn the_programs_compile() {
        assert!(!allowlist_program().unwrap().is_empty());
        assert!(!enosys_program().unwrap().is_empty());
    }

    #[test]
    fn the_gpu_policy_adds_only_ioctl_rules() {
        assert!(!allowlist_program_for(Policy::Gpu).unwrap().is_empty());
        let cpu = docker_profile_for(Policy::Cpu);
        let gpu = docker_profile_for(Policy::Gpu);
        assert_eq!(cpu, docker_profile());
        assert!(gpu.len() > cpu.len());
        assert!(gpu.contains("SCMP_CMP_MASKED_EQ") && gpu.contains(&format!("{}", 0x3000_0001)));
        assert!(!gpu.contains("\"socket\""));
    }

    #[test]
    fn the_docker_profile_is_json_and_allows_no_socket() {
        let profile = docker_profile();
        assert!(profile.starts_with('{') && profile.ends_with('}'));
        assert!(!profile.contains("\"socket\""), "{profile}");
        assert!(profile.contains("\"clone3\""));
    }

    #[test]
    fn the_init_profile_is_the_worker_profile_plus_the_init_calls() {
        for policy in [Policy::Cpu, Policy::Gpu] {
            let worker = docker_profile_for(policy);
            let init = docker_init_profile_for(policy);
            assert!(init.starts_with(worker.strip_suffix("]}").unwrap()));
            assert!(init.ends_with("]}"));
            assert!(init.contains("\"wait4\"") && init.contains("\"splice\""));
            assert!(!worker.contains("\"wait4\"") && !worker.contains("\"splice\""));
            assert!(!init.contains("\"socket\""));
        }
        for name in crate::INIT_EXTRA_SYSCALLS {
            assert!(syscall_number(name).is_some(), "{name}");
        }
    }
}
