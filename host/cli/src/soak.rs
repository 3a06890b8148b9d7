//! The soak run: many sandboxes started, stopped, dropped and crashed in turn, and a count of
//! what they left behind in the host.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tfsandbox::closure::WORKER_PATH;
use tfsandbox::procfs;
use tfsandbox::runtime::{cgroup, docker, gvisor};
use tfsandbox::{Config, Result, RuntimeConfig, RuntimeKind, Sandbox};

/// How long leftovers may take to go after the last cycle (an engine removes containers late).
const SETTLE: Duration = Duration::from_secs(20);
/// Cycles run before the first count, so one-time allocations are not counted as growth.
const WARM_UP: u64 = 10;

/// What the host holds that sandboxes could leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    /// Processes under this one, and any tfsandbox worker or jailer anywhere.
    pub processes: BTreeSet<u32>,
    /// This process's containers (docker) or runsc sandboxes (gvisor), in any state (0 for the
    /// process runtime).
    pub containers: usize,
    /// Entries of this process's runsc state and bundle folders, the folders included (gvisor).
    pub runsc_state: usize,
    pub fds: usize,
    /// This process's sandbox folders (`tfsandbox-<pid>-*`) in the temp folder: the process
    /// runtime's working folders and the docker runtime's FIFO folders (`tfsandbox-<pid>-fifos-*`).
    pub temp_dirs: usize,
    /// This process's sandbox cgroups, in every hierarchy (the process runtime).
    pub cgroups: usize,
    pub rss_kib: u64,
}

impl Census {
    pub async fn take(config: &Config) -> Result<Census> {
        let (containers, runsc_state, runsc_root) = match &config.runtime {
            RuntimeConfig::Docker(_) => (docker::containers_of_this_process().await?, 0, None),
            RuntimeConfig::Gvisor(settings) => {
                let (sandboxes, entries) = gvisor::leftovers(settings);
                (sandboxes, entries, Some(gvisor::root_argument(settings)))
            }
            RuntimeConfig::Process(_) => (0, 0, None),
        };
        // Only this process's: other programs on the host make theirs.
        let own = format!("tfsandbox-{}-", std::process::id());
        Ok(Census {
            processes: sandbox_processes(runsc_root.as_deref()),
            containers,
            runsc_state,
            fds: count_entries("/proc/self/fd".into(), |_| true),
            temp_dirs: count_entries(std::env::temp_dir(), |name| name.starts_with(&own)),
            cgroups: cgroup::Hierarchies::of_this_host()
                .map(|h| h.of_this_process())
                .unwrap_or(0),
            rss_kib: live_rss_kib(),
        })
    }
}

/// What a soak run left behind, against the count taken after warming up.
#[derive(Debug, Clone)]
pub struct Report {
    pub runtime: RuntimeKind,
    pub cycles: u64,
    pub processes: usize,
    pub containers: usize,
    pub fds: usize,
    pub temp_dirs: usize,
    pub cgroups: usize,
    pub runsc_state: usize,
    pub rss_growth_kib: i64,
    pub elapsed: Duration,
}

impl Report {
    /// The summary line: `soak <runtime>: N cycles, leaked processes P, containers C, fds F,
    /// host RSS growth K KiB`.
    pub fn line(&self) -> String {
        format!(
            "soak {}: {} cycles, leaked processes {}, containers {}, fds {}, host RSS growth {} KiB",
            self.runtime, self.cycles, self.processes, self.containers, self.fds, self.rss_growth_kib
        )
    }
}

/// Runs `cycles` cycles of `config`'s sandbox, each one of: start and shut down; start and
/// drop; start, kill the worker (as a crash), wait for its replacement, and drop. Every cycle
/// loads each of `config.models` and calls the worker. `progress` hears of each finished cycle.
pub async fn run(config: &Config, cycles: u64, progress: impl Fn(u64)) -> Result<Report> {
    let started = Instant::now();
    for n in 0..WARM_UP.min(cycles) {
        cycle(config, n).await?;
    }
    let before = Census::take(config).await?;
    for n in WARM_UP.min(cycles)..cycles {
        cycle(config, n).await?;
        progress(n + 1);
    }
    // Leftovers get a while to go; whatever is still there then is a leak.
    let settle = Instant::now() + SETTLE;
    let after = loop {
        let after = Census::take(config).await?;
        let clean = after.processes.is_subset(&before.processes)
            && after.containers <= before.containers
            && after.fds <= before.fds
            && after.temp_dirs <= before.temp_dirs
            && after.cgroups <= before.cgroups
            && after.runsc_state <= before.runsc_state;
        if clean || Instant::now() > settle {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(Report {
        runtime: config.runtime.kind(),
        cycles,
        processes: after.processes.difference(&before.processes).count(),
        containers: after.containers.saturating_sub(before.containers),
        fds: after.fds.saturating_sub(before.fds),
        temp_dirs: after.temp_dirs.saturating_sub(before.temp_dirs),
        cgroups: after.cgroups.saturating_sub(before.cgroups),
        runsc_state: after.runsc_state.saturating_sub(before.runsc_state),
        rss_growth_kib: after.rss_kib as i64 - before.rss_kib as i64,
        elapsed: started.elapsed(),
    })
}

async fn cycle(config: &Config, n: u64) -> Result<()> {
    let sandbox = Sandbox::start(config.clone()).await?;
    for dir in &config.models {
        sandbox.load_model(dir).await?;
    }
    sandbox.info().await?;
    match n % 3 {
        0 => {
            sandbox.shutdown().await;
        }
        1 => drop(sandbox),
        _ => {
            let generation = sandbox.generation();
            sandbox.kill_worker();
            // The next call waits for the replacement, which has the models loaded again.
            while sandbox.generation() == generation {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sandbox.info().await?;
            drop(sandbox);
        }
    }
    Ok(())
}

/// Descendants of this process, sandbox workers orphaned to init (a worker whose jailer died
/// without taking it along would escape the first count), and any runsc process (a sandbox
/// outliving its `runsc run`) whose command line has `runsc_root`, this process's runsc state
/// (gvisor only).
fn sandbox_processes(runsc_root: Option<&str>) -> BTreeSet<u32> {
    let me = std::process::id();
    let mut parents = Vec::new();
    let mut ours = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return ours;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(ppid) = parent_of(pid) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_worker = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == WORKER_PATH.as_bytes());
        let is_our_runsc = runsc_root
            .is_some_and(|root| cmdline.split(|&b| b == 0).any(|arg| arg == root.as_bytes()));
        if (is_worker && ppid == 1) || is_our_runsc {
            ours.insert(pid);
        }
        parents.push((pid, ppid));
    }
    // Descendants: grow the set from this process until nothing is added.
    let mut tree = BTreeSet::from([me]);
    loop {
        let before = tree.len();
        for (pid, ppid) in &parents {
            if tree.contains(ppid) {
                tree.insert(*pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    tree.remove(&me);
    ours.extend(tree);
    ours
}

fn parent_of(pid: u32) -> Option<u32> {
    procfs::stat_field(pid, 4).and_then(|ppid| u32::try_from(ppid).ok())
}

fn count_entries(dir: PathBuf, wanted: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(&wanted))
                .count()
        })
        .unwrap_or(0)
}

/// Resident memory once the allocator has handed back what it only keeps cached: what is left is
/// memory in use, so growth between two counts is a leak rather than the allocator's slack.
fn live_rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory of glibc's heap; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
