//! The worker's new root: a tmpfs holding only what the plan names, pivoted into, with the host's
//! root detached so no path leads back to it.

use std::ffi::CString;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::error::{JailerError, Result};
use crate::plan::{Plan, GROUP, PASSWD};

/// Files of /proc that show the host rather than the sandbox, and that TensorFlow does not read
/// (the fixtures pass with them masked): each is covered by /dev/null.
pub const MASKED_PROC_FILES: &[&str] = &[
    "cmdline",
    "loadavg",
    "locks",
    "interrupts",
    "kcore",
    "kallsyms",
    "keys",
    "key-users",
    "latency_stats",
    "sched_debug",
    "schedstat",
    "softirqs",
    "swaps",
    "sysrq-trigger",
    "timer_list",
    "vmallocinfo",
    "zoneinfo",
];
/// Folders of /proc masked the same way, by an empty read-only tmpfs.
pub const MASKED_PROC_DIRS: &[&str] = &["pressure", "acpi", "scsi", "fs", "irq", "tty", "driver"];

pub fn build(plan: &Plan) -> Result<()> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(JailerError::sys("making mounts private"))?;
    let root = &plan.root;
    rustix::mount::mount(
        "tmpfs",
        root,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"size=16m,mode=0755"),
    )
    .map_err(JailerError::path("mounting the new root on", root))?;
    let inside = |path: &str| root.join(path.trim_start_matches('/'));

    // /tmp first: a closure file whose path lies under /tmp (a checkout there) is bound on top
    // of it rather than hidden by it.
    let tmp = inside("/tmp");
    fs::create_dir_all(&tmp).map_err(JailerError::io("creating", &tmp))?;
    let options = CString::new(format!("size={},mode=1777", plan.tmp_bytes))
        .map_err(|e| JailerError::Nul(e.to_string()))?;
    rustix::mount::mount(
        "tmpfs",
        &tmp,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(options.as_c_str()),
    )
    .map_err(JailerError::path("mounting /tmp on", &tmp))?;

    for bind in &plan.files {
        let target = inside(&bind.inside);
        make_parent(&target)?;
        fs::write(&target, b"").map_err(JailerError::io("creating", &target))?;
        bind_read_only(&bind.host, &target, MountFlags::empty())?;
    }
    for bind in &plan.models {
        let target = inside(&format!("/models/{}", bind.inside));
        fs::create_dir_all(&target).map_err(JailerError::io("creating", &target))?;
        match bind.tree {
            Some(fd) => attach_tree(fd, &bind.host, &target)?,
            None => bind_read_only(&bind.host, &target, MountFlags::NOEXEC)?,
        }
    }
    for dir in ["/models", "/etc", "/tmp", "/dev", "/proc"] {
        let dir = inside(dir);
        fs::create_dir_all(&dir).map_err(JailerError::io("creating", &dir))?;
    }
    for (file, text) in [("/etc/passwd", PASSWD), ("/etc/group", GROUP)] {
        let file = inside(file);
        fs::write(&file, text).map_err(JailerError::io("writing", &file))?;
    }

    let devices = ["/dev/null", "/dev/zero", "/dev/urandom"]
        .into_iter()
        .map(PathBuf::from)
        .chain(plan.devices.iter().cloned());
    for device in devices {
        let target = inside(&device.to_string_lossy());
        fs::write(&target, b"").map_err(JailerError::io("creating", &target))?;
        rustix::mount::mount_bind(&device, &target)
            .map_err(JailerError::path("binding", &device))?;
    }

    let proc = inside("/proc");
    rustix::mount::mount(
        "proc",
        &proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RDONLY,
        None,
    )
    .map_err(JailerError::path("mounting proc on", &proc))?;
    mask_proc(&proc)?;

    rustix::process::chdir(root).map_err(JailerError::path("chdir", root))?;
    rustix::process::pivot_root(".", ".").map_err(JailerError::sys("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(JailerError::sys("detaching the old root"))?;
    rustix::process::chdir("/").map_err(JailerError::path("chdir", "/"))?;
    rustix::mount::mount_remount(
        "/",
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        "",
    )
    .map_err(JailerError::sys("making / read-only"))?;
    rustix::process::chdir("/tmp").map_err(JailerError::path("chdir", "/tmp"))?;
    Ok(())
}

/// What a pid namespace does not hide: host-wide figures and lists. Entries this kernel lacks are
/// no leak and are skipped.
fn mask_proc(proc: &Path) -> Result<()> {
    for name in MASKED_PROC_FILES {
        let target = proc.join(name);
        if target.is_file() {
            rustix::mount::mount_bind("/dev/null", &target)
                .map_err(JailerError::path("masking", &target))?;
        }
    }
    for name in MASKED_PROC_DIRS {
        let target = proc.join(name);
        if target.is_dir() {
            rustix::mount::mount(
                "tmpfs",
                &target,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(c"size=4k,mode=0555"),
            )
            .map_err(JailerError::path("masking", &target))?;
        }
    }
    Ok(())
}

fn make_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(JailerError::io("creating", parent)),
        None => Ok(()),
    }
}

/// Attaches the detached mount the host opened for `host` (descriptor `fd`) at `target`, then
/// remounts it as [`bind_read_only`] does; the descriptor is closed.
fn attach_tree(fd: i32, host: &Path, target: &Path) -> Result<()> {
    // SAFETY: the host handed this descriptor over for this model alone.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::mount::move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(JailerError::path(
        "attaching the model opened by the host for",
        host,
    ))?;
    remount_read_only(target, MountFlags::NOEXEC)
}

/// Binds `host` at `target`, then remounts the bind read-only, nosuid, nodev and `extra`, keeping
/// the flags the source mount has (a user namespace may not clear them).
fn bind_read_only(host: &Path, target: &Path, extra: MountFlags) -> Result<()> {
    rustix::mount::mount_bind(host, target).map_err(JailerError::path("binding", host))?;
    remount_read_only(target, extra)
}

fn remount_read_only(target: &Path, extra: MountFlags) -> Result<()> {
    let kept = rustix::fs::statvfs(target)
        .map(|s| s.f_flag)
        .map_err(JailerError::path("statvfs", target))?;
    let mut flags =
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | extra;
    use rustix::fs::StatVfsMountFlags as V;
    for (vfs, mount) in [
        (V::NOEXEC, MountFlags::NOEXEC),
        (V::NOATIME, MountFlags::NOATIME),
        (V::NODIRATIME, MountFlags::NODIRATIME),
        (V::RELATIME, MountFlags::RELATIME),
    ] {
        if kept.contains(vfs) {
            flags |= mount;
        }
    }
    rustix::mount::mount_remount(target, flags, "")
        .map_err(JailerError::path("making read-only", target))
}
