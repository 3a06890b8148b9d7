//! Resident memory: what one sandbox costs the host, and its worker against a bare one.

use std::path::Path;

use anyhow::{Context, Result};

/// Resident bytes of one process (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the status of pid {pid}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no VmRSS for pid {pid}"))?;
    Ok(kib * 1024)
}

/// Resident bytes of this process in use: freed memory the allocator still holds is given back
/// first, or what earlier rows freed would hide what a sandbox adds.
pub fn own_rss_bytes() -> Result<u64> {
    // SAFETY: malloc_trim only releases free memory of glibc's heap; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes(std::process::id())
}

/// Resident bytes of `pid` and every process below it: the process runtime's jailer and its
/// worker. Pages they share are counted in each, as RSS always does.
pub fn tree_rss_bytes(pid: u32) -> Result<u64> {
    let mut total = rss_bytes(pid)?;
    for child in children(pid) {
        total += tree_rss_bytes(child)?;
    }
    Ok(total)
}

fn children(pid: u32) -> Vec<u32> {
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let Ok(tasks) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
