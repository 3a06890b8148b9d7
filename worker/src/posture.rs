//! What confines the worker, read back from the kernel: the host's intentions are not evidence.

use std::fs;

use rustix::process::{getrlimit, Resource};
use tfsandbox_proto::v1::Posture;

pub fn observe() -> Posture {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    Posture {
        cap_effective: field("CapEff"),
        cap_permitted: field("CapPrm"),
        cap_bounding: field("CapBnd"),
        no_new_privs: field("NoNewPrivs") == "1",
        seccomp_modes: thread_seccomp_modes(),
        network_interfaces: network_interfaces(),
        root_read_only: rustix::fs::statvfs("/")
            .map(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
            .unwrap_or(false),
        visible_models: sorted_names("/models"),
        mounts: fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .collect(),
        rlimits: rlimits(),
        namespaces: sorted_names("/proc/self/ns")
            .into_iter()
            .filter_map(|n| {
                let target = fs::read_link(format!("/proc/self/ns/{n}")).ok()?;
                Some(target.to_string_lossy().into_owned())
            })
            .collect(),
        landlock: std::env::var("TFSANDBOX_LANDLOCK").unwrap_or_else(|_| "not applied".into()),
        cgroup: std::env::var(tfsandbox_proto::worker_env::CGROUP)
            .unwrap_or_else(|_| "none".into()),
    }
}

fn thread_seccomp_modes() -> Vec<u32> {
    sorted_names("/proc/self/task")
        .into_iter()
        .filter_map(|tid| {
            let status = fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
            status.lines().find_map(|l| {
                l.strip_prefix("Seccomp:")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .collect()
}

fn network_interfaces() -> Vec<String> {
    let dev = fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    names.sort();
    names
}

fn sorted_names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn rlimits() -> Vec<String> {
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    [
        ("as", Resource::As),
        ("core", Resource::Core),
        ("cpu", Resource::Cpu),
        ("fsize", Resource::Fsize),
        ("nofile", Resource::Nofile),
        ("nproc", Resource::Nproc),
    ]
    .into_iter()
    .map(|(name, resource)| {
        let limit = getrlimit(resource);
        format!("{name} {} {}", show(limit.current), show(limit.maximum))
    })
    .collect()
}
