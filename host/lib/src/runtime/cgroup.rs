//! A process sandbox's own cgroup: its memory (with no swap beyond it), CPU quota and pids,
//! counted over every process of the sandbox together, which rlimits cannot do.
//!
//! The host makes one cgroup per sandbox beside itself: in the cgroup v2 hierarchy where it
//! offers the controllers (a delegated subtree), else in each v1 hierarchy that holds one (as
//! root). The jailer's process joins it between fork and exec, before it unshares anything, so
//! nothing of the sandbox ever runs outside it. Written by hand: the cgroup crates on crates.io
//! either manage a whole container's cgroups (libcgroups, with systemd's D-Bus) or are v1 only.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one sandbox's cgroup bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    /// Memory of all its processes together; swap is bounded to the same figure, so none.
    pub memory_bytes: u64,
    /// CPUs it may use (a CFS quota; fractions allowed).
    pub cpus: f64,
    /// The most processes and threads it may hold.
    pub pids: u64,
}

impl fmt::Display for CgroupLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory {} bytes (no swap), cpus {}, pids {}",
            self.memory_bytes, self.cpus, self.pids
        )
    }
}

/// Why a sandbox could not get its cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup hierarchy offers this host the {controller} controller (cgroup v2 needs a \
         delegated subtree with it enabled, v1 needs its hierarchy mounted and root)"
    )]
    NoController { controller: &'static str },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The controllers a sandbox's cgroup needs.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The name of a sandbox's cgroup starts with this, then the host's pid namespace and pid (whose
/// it is, for the sweep of a dead host's leftovers) and a count.
const PREFIX: &str = "tfsandbox-";

/// Where the sandboxes' cgroups go: one folder per hierarchy, beside the host's own cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// (the folder new cgroups are made in, whether it is cgroup v2, the controllers it serves).
    places: Vec<(PathBuf, bool, Vec<&'static str>)>,
}

impl Hierarchies {
    /// This host's: read from its /proc/self/cgroup and mountinfo.
    pub fn of_this_host() -> Result<Hierarchies> {
        let read = |path: &'static str| {
            fs::read_to_string(path).map_err(io_error("reading", Path::new(path)))
        };
        Hierarchies::find(
            &read("/proc/self/cgroup")?,
            &read("/proc/self/mountinfo")?,
            |dir| fs::read_to_string(dir.join("cgroup.controllers")).ok(),
        )
    }

    /// Each controller in the v1 hierarchy mounted for it, else in the v2 one where the host's
    /// cgroup offers it. `controllers_of` reads a v2 folder's cgroup.controllers.
    fn find(
        own: &str,
        mountinfo: &str,
        controllers_of: impl Fn(&Path) -> Option<String>,
    ) -> Result<Hierarchies> {
        // /proc/self/cgroup: "id:controllers:path"; v2 is "0::path".
        let own_path = |v1_controller: Option<&str>| {
            own.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let matches = match v1_controller {
                    Some(c) => controllers.split(',').any(|x| x == c),
                    None => controllers.is_empty(),
                };
                matches.then(|| path.to_string())
            })
        };
        // mountinfo: "id parent dev root mountpoint options [optional...] - fstype source super".
        let mounts: Vec<(String, String, String, String)> = mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let left: Vec<&str> = left.split(' ').collect();
                let right: Vec<&str> = right.split(' ').collect();
                Some((
                    right.first()?.to_string(),
                    left.get(3)?.to_string(),
                    unescape(left.get(4)?),
                    right.get(2).unwrap_or(&"").to_string(),
                ))
            })
            .filter(|(fstype, ..)| fstype == "cgroup" || fstype == "cgroup2")
            .collect();
        // The folder of the host's own cgroup in a mount whose root is `root`.
        let inside = |mountpoint: &str, root: &str, path: &str| {
            let relative = path
                .strip_prefix(root.trim_end_matches('/'))
                .unwrap_or(path)
                .trim_start_matches('/');
            Path::new(mountpoint).join(relative)
        };
        let mut places: Vec<(PathBuf, bool, Vec<&'static str>)> = Vec::new();
        let mut add = |dir: PathBuf, v2: bool, controller: &'static str| match places
            .iter_mut()
            .find(|(d, ..)| *d == dir)
        {
            Some((.., controllers)) => controllers.push(controller),
            None => places.push((dir, v2, vec![controller])),
        };
        let v2_path = own_path(None);
        for controller in CONTROLLERS {
            let v1 = mounts.iter().find(|(fstype, .., options)| {
                fstype == "cgroup" && options.split(',').any(|o| o == controller)
            });
            if let (Some((_, root, mountpoint, _)), Some(path)) = (v1, own_path(Some(controller))) {
                add(inside(mountpoint, root, &path), false, controller);
                continue;
            }
            let v2 = mounts
                .iter()
                .filter(|(fstype, ..)| fstype == "cgroup2")
                .find_map(|(_, root, mountpoint, _)| {
                    let dir = inside(mountpoint, root, v2_path.as_deref()?);
                    let offered = controllers_of(&dir)?;
                    offered
                        .split_whitespace()
                        .any(|c| c == controller)
                        .then_some(dir)
                });
            match v2 {
                Some(dir) => add(dir, true, controller),
                None => return Err(CgroupError::NoController { controller }),
            }
        }
        Ok(Hierarchies { places })
    }

    /// Makes a sandbox's cgroup in every hierarchy and sets its limits there.
    pub fn create(&self, limits: CgroupLimits) -> Result<Cgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{PREFIX}{}-{}-{}",
            pid_namespace(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            join: Vec::new(),
        };
        for (parent, v2, controllers) in &self.places {
            let dir = parent.join(&name);
            if *v2 {
                enable_controllers(parent, controllers)?;
            }
            fs::create_dir(&dir).map_err(io_error("creating the cgroup", &dir))?;
            cgroup.dirs.push(CgroupDir {
                path: dir.clone(),
                v2: *v2,
                memory: controllers.contains(&"memory"),
            });
            for controller in controllers {
                for (file, value) in settings(controller, *v2, limits) {
                    let path = dir.join(file);
                    // memory.memsw (v1) and memory.swap.max (v2) exist only where the kernel
                    // accounts swap; without that there is no swap to bound.
                    let optional = file.contains("memsw") || file.contains("swap");
                    if optional && !path.exists() {
                        continue;
                    }
                    fs::write(&path, value).map_err(io_error("writing", &path))?;
                }
            }
            let procs = dir.join("cgroup.procs");
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(io_error("opening", &procs))?;
            cgroup.join.push(file.into());
        }
        Ok(cgroup)
    }

    /// How many sandbox cgroups of this process there are, over every hierarchy (not counting
    /// the leaf the host may have moved itself into under v2).
    pub fn of_this_process(&self) -> usize {
        let own = format!("{PREFIX}{}-{}-", pid_namespace(), std::process::id());
        self.places
            .iter()
            .filter_map(|(parent, ..)| fs::read_dir(parent).ok())
            .flatten()
            .flatten()
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&own) && !name.ends_with("-host")
            })
            .count()
    }

    /// Removes the empty cgroups that hosts of this pid namespace left when they died (only an
    /// empty cgroup can be removed; a sandbox's processes die with its host).
    pub fn remove_orphans(&self) {
        let ours = format!("{PREFIX}{}-", pid_namespace());
        for (parent, ..) in &self.places {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(&ours))
                    .and_then(|rest| rest.split_once('-'))
                    .and_then(|(pid, _)| pid.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
    }
}

/// The files that set `controller`'s limits, in the order they must be written (v1 refuses a
/// memory+swap limit below the memory limit).
fn settings(controller: &str, v2: bool, limits: CgroupLimits) -> Vec<(&'static str, String)> {
    const PERIOD_US: u64 = 100_000;
    let quota = ((limits.cpus * PERIOD_US as f64).round() as u64).max(1_000);
    let memory = limits.memory_bytes.to_string();
    match (controller, v2) {
        ("memory", false) => vec![
            ("memory.limit_in_bytes", memory.clone()),
            ("memory.memsw.limit_in_bytes", memory),
        ],
        // An out-of-memory kill takes the whole sandbox, not one process of it.
        ("memory", true) => vec![
            ("memory.max", memory),
            ("memory.swap.max", "0".into()),
            ("memory.oom.group", "1".into()),
        ],
        ("cpu", false) => vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota.to_string()),
        ],
        ("cpu", true) => vec![("cpu.max", format!("{quota} {PERIOD_US}"))],
        ("pids", _) => vec![("pids.max", limits.pids.to_string())],
        _ => Vec::new(),
    }
}

/// v2 serves a controller to a child only if the parent enables it in its subtree_control.
fn enable_controllers(parent: &Path, controllers: &[&str]) -> Result<()> {
    let path = parent.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&path).map_err(io_error("reading", &path))?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let enable = || fs::write(&path, missing.join(" "));
    match enable() {
        // A v2 cgroup that holds processes cannot hand controllers to children (the "no internal
        // processes" rule). In a subtree delegated to the host (a systemd unit with
        // Delegate=yes), the host moves itself into a leaf of its own, as container managers
        // do, and tries again; any other process left beside it still fails the start.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let leaf = parent.join(format!(
                "{PREFIX}{}-{}-host",
                pid_namespace(),
                std::process::id()
            ));
            match fs::create_dir(&leaf) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(io_error("creating the host's own leaf", &leaf)(e))
                }
                _ => {}
            }
            let procs = leaf.join("cgroup.procs");
            fs::write(&procs, "0").map_err(io_error("moving the host into", &procs))?;
            enable().map_err(io_error("enabling controllers in", &path))
        }
        other => other.map_err(io_error("enabling controllers in", &path)),
    }
}

/// The inode of this process's pid namespace: tells this host's leftovers from those of hosts
/// in other pid namespaces, whose pids mean nothing here.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug)]
struct CgroupDir {
    path: PathBuf,
    v2: bool,
    /// Whether this hierarchy holds the memory controller (and so the out-of-memory count).
    memory: bool,
}

/// One sandbox's cgroup, in every hierarchy; removed (its processes killed first) when dropped.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<CgroupDir>,
    /// cgroup.procs of each, open for the jailer's process to write itself into.
    join: Vec<OwnedFd>,
}

impl Cgroup {
    /// "cgroup v2" or "cgroup v1", as the posture report names it.
    pub fn kind(&self) -> &'static str {
        if self.dirs.iter().all(|d| d.v2) {
            "cgroup v2"
        } else {
            "cgroup v1"
        }
    }

    /// The descriptors a child writes "0" into to join (see [`join_self`]).
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.join.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Closes the descriptors once the child has joined.
    pub fn joined(&mut self) {
        self.join.clear();
    }

    /// How many times the kernel killed a process of it for want of memory.
    pub fn oom_kills(&self) -> u64 {
        self.dirs
            .iter()
            .filter(|d| d.memory)
            .filter_map(|d| {
                let file = if d.v2 {
                    "memory.events"
                } else {
                    "memory.oom_control"
                };
                let text = fs::read_to_string(d.path.join(file)).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .sum()
    }

    /// Kills every process left in it; the kernel may take a moment to let them go.
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            // v2 since Linux 5.14 kills the whole cgroup at once.
            let kill = dir.path.join("cgroup.kill");
            if dir.v2 && fs::write(&kill, "1").is_ok() {
                continue;
            }
            let Ok(procs) = fs::read_to_string(dir.path.join("cgroup.procs")) else {
                continue;
            };
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
    }

    /// Kills what is left and removes it, waiting up to `patience` for dying processes to go.
    pub async fn remove(mut self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            self.kill_all();
            self.dirs.retain(|d| fs::remove_dir(&d.path).is_err());
            if self.dirs.is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Cgroup {
    /// Without waiting: what cannot go yet is swept by the next runtime of this host's namespace.
    fn drop(&mut self) {
        self.kill_all();
        for dir in &self.dirs {
            let _ = fs::remove_dir(&dir.path);
        }
    }
}

/// Between fork and exec: moves the calling process into the cgroups whose cgroup.procs `fds`
/// are. Writing "0" means the writer itself; one write per descriptor, no allocation, so it is
/// safe after fork.
pub fn join_self(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: the descriptor stays open in the parent's Cgroup until the child has exec'd,
        // and the child got its own copy at fork.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        rustix::io::write(fd, b"0").map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/api/abc\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_hierarchies_are_used_each_at_the_hosts_own_path() {
        let found = Hierarchies::find(HYBRID_CGROUP, HYBRID_MOUNTS, |_| Some(String::new()))
            .expect("all three are mounted");
        assert_eq!(
            found.places,
            vec![
                (
                    "/sys/fs/cgroup/memory/api/abc".into(),
                    false,
                    vec!["memory"]
                ),
                ("/sys/fs/cgroup/cpu".into(), false, vec!["cpu"]),
                ("/sys/fs/cgroup/pids".into(), false, vec!["pids"]),
            ]
        );
    }

    #[test]
    fn v2_is_one_folder_for_every_controller_it_offers() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let found = Hierarchies::find("0::/user.slice/app\n", mounts, |dir| {
            assert_eq!(dir, Path::new("/sys/fs/cgroup/user.slice/app"));
            Some("cpuset cpu io memory pids\n".into())
        })
        .expect("v2 offers all three");
        assert_eq!(
            found.places,
            vec![(
                "/sys/fs/cgroup/user.slice/app".into(),
                true,
                vec!["memory", "cpu", "pids"]
            )]
        );
    }

    #[test]
    fn a_missing_controller_is_named() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let error = Hierarchies::find("0::/app\n", mounts, |_| Some("memory pids".into()))
            .expect_err("no cpu controller");
        assert!(matches!(
            error,
            CgroupError::NoController { controller: "cpu" }
        ));
        let error = Hierarchies::find("0::/\n", "", |_| None).expect_err("no cgroup at all");
        assert!(error.to_string().contains("memory controller"), "{error}");
    }

    #[test]
    fn a_mount_of_a_subtree_is_joined_below_its_root() {
        let mounts = "35 31 0:32 /api /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu,cpuacct\n\
                      39 31 0:36 / /p rw - cgroup cgroup rw,pids\n";
        let own = "4:memory:/api/abc\n1:cpu,cpuacct:/\n8:pids:/x\n";
        let found = Hierarchies::find(own, mounts, |_| None).expect("all three");
        let dirs: Vec<&Path> = found.places.iter().map(|(d, ..)| d.as_path()).collect();
        assert_eq!(
            dirs,
            [
                Path::new("/sys/fs/cgroup/memory/abc"),
                Path::new("/sys/fs/cgroup/cpu x"),
                Path::new("/p/x")
            ]
        );
    }

    #[test]
    fn limits_are_written_memory_first_and_cpu_as_a_quota() {
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            cpus: 0.5,
            pids: 64,
        };
        assert_eq!(
            settings("memory", false, limits),
            [
                ("memory.limit_in_bytes", "1073741824".to_string()),
                ("memory.memsw.limit_in_bytes", "1073741824".to_string()),
            ]
        );
        assert_eq!(
            settings("cpu", true, limits),
            [("cpu.max", "50000 100000".to_string())]
        );
        assert_eq!(
            settings("cpu", false, limits)[1],
            ("cpu.cfs_quota_us", "50000".to_string())
        );
        assert_eq!(
            settings("pids", true, limits),
            [("pids.max", "64".to_string())]
        );
    }
}
