//! The policy as a Docker seccomp profile, and (`bpf`, with the `confine` feature) as the BPF
//! program the `process` runtime installs.

#[cfg(feature = "confine")]
mod bpf;

#[cfg(feature = "confine")]
pub use bpf::{
    allowlist_program, allowlist_program_for, enosys_program, syscall_number, PolicyError,
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

// The tests compile the BPF programs too.
#[cfg(all(test, feature = "confine"))]
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
