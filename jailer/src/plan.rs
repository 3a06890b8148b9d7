//! The contract between the host and the jailer: what the sandbox holds, as typed values, and the
//! one command line that carries them. The host writes it with [`Plan::to_args`], the jailer reads
//! it back with [`Plan::parse`]; the two round-trip for any path, `=` or non-UTF-8 bytes included,
//! because no value is ever split: a pair is two arguments.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::seccomp::Policy;

/// The user and group a worker is, inside every runtime's sandbox.
pub const NOBODY: u32 = 65534;
/// `/etc/passwd` and `/etc/group` inside a sandbox: only nobody.
pub const PASSWD: &str = "nobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n";
pub const GROUP: &str = "nobody:x:65534:\n";

/// The jailer asks for its id maps with this byte, once it is in its new user namespace...
pub const HANDSHAKE_ASK: u8 = b'M';
/// ...and goes on when the host answers this one, the maps written.
pub const HANDSHAKE_GO: u8 = b'G';

/// The jailer's exit code when it fails before the worker runs.
pub const FAILED: u8 = 125;

/// A file or folder of the host, bound read-only into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Where it appears: an absolute path inside (`/usr/lib/libc.so.6`), or a model's name under
    /// `/models`.
    pub inside: String,
    pub host: PathBuf,
    /// A model only: `host` already opened by the host as a detached, read-only mount
    /// (`open_tree`), inherited at this descriptor and attached in place of binding the path.
    /// The host opens it with its own rights, so a model below a folder only the host's user
    /// may enter (mode 0700) is bound although the jailer, once nobody, could not reach it.
    pub tree: Option<i32>,
}

/// A resource limit the jailer sets, soft and hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    AddressSpace,
    Core,
    CpuSeconds,
    FileSize,
    OpenFiles,
    Processes,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::AddressSpace,
        Limit::Core,
        Limit::CpuSeconds,
        Limit::FileSize,
        Limit::OpenFiles,
        Limit::Processes,
    ];

    /// The name on the command line (prlimit's).
    pub fn name(self) -> &'static str {
        match self {
            Limit::AddressSpace => "as",
            Limit::Core => "core",
            Limit::CpuSeconds => "cpu",
            Limit::FileSize => "fsize",
            Limit::OpenFiles => "nofile",
            Limit::Processes => "nproc",
        }
    }
}

/// A protection the host allowed to be weaker than asked where the kernel lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weaker {
    /// Landlock partly or not enforced (an old kernel).
    Landlock,
    /// No cgroup of its own for the sandbox (none offered to the host), so no bound on its
    /// memory, CPU and pids as a whole: only the per-process rlimits. The host makes the
    /// cgroup; the jailer only carries the choice.
    Cgroup,
}

impl Weaker {
    pub const ALL: [Weaker; 2] = [Weaker::Landlock, Weaker::Cgroup];

    pub fn name(self) -> &'static str {
        match self {
            Weaker::Landlock => "landlock",
            Weaker::Cgroup => "cgroup",
        }
    }
}

impl FromStr for Weaker {
    type Err = PlanError;
    fn from_str(name: &str) -> Result<Weaker, PlanError> {
        Weaker::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| PlanError::UnknownWeaker(name.to_string()))
    }
}

impl fmt::Display for Weaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the host asks of the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// A host folder to build the new root on (the sandbox's own working folder).
    pub root: PathBuf,
    /// Files bound read-only at their path inside.
    pub files: Vec<Bind>,
    /// Model folders bound read-only (and noexec) at `/models/<inside>`.
    pub models: Vec<Bind>,
    /// GPU device nodes (`/dev/nvidia*`), bound read-write at the same path.
    pub devices: Vec<PathBuf>,
    /// The size of the noexec `/tmp` tmpfs.
    pub tmp_bytes: u64,
    pub limits: Vec<(Limit, u64)>,
    pub weaker: Vec<Weaker>,
    /// The loader and its arguments.
    pub command: Vec<OsString>,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            root: PathBuf::new(),
            files: Vec::new(),
            models: Vec::new(),
            devices: Vec::new(),
            tmp_bytes: 1 << 30,
            limits: Vec::new(),
            weaker: Vec::new(),
            command: Vec::new(),
        }
    }
}

/// What is wrong with a jailer command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{flag} needs {count} value(s)")]
    MissingValue { flag: &'static str, count: usize },
    #[error("unknown argument {0:?}")]
    UnknownArgument(OsString),
    #[error("{flag}: {value:?} is not a number")]
    NotANumber { flag: &'static str, value: OsString },
    #[error("{flag}: {value:?} is not UTF-8")]
    NotUtf8 { flag: &'static str, value: OsString },
    #[error("unknown rlimit '{0}'")]
    UnknownLimit(String),
    #[error("unknown protection to weaken '{0}' (known: landlock, cgroup)")]
    UnknownWeaker(String),
    #[error("--device takes /dev/nvidia* nodes only, got {0:?}")]
    NotAGpuNode(PathBuf),
    #[error("--model-tree: descriptor {0} is not above 2")]
    BadTreeFd(u64),
    #[error("model name {0:?} must be one path component")]
    BadModelName(String),
    #[error("--file: {0:?} must be an absolute path inside without '..'")]
    BadInsidePath(String),
    #[error("no --root given")]
    NoRoot,
    #[error("no command after --")]
    NoCommand,
}

impl Plan {
    /// The descriptors of the model trees the host handed over, lowest first.
    pub fn tree_fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self.models.iter().filter_map(|b| b.tree).collect();
        fds.sort_unstable();
        fds
    }

    /// The seccomp allowlist this plan's worker gets.
    pub fn policy(&self) -> Policy {
        Policy::for_gpus(!self.devices.is_empty())
    }

    /// The command line that [`Plan::parse`] reads back into this plan.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--root".into(), self.root.clone().into()];
        for (flag, binds) in [("--file", &self.files), ("--model", &self.models)] {
            for bind in binds {
                match bind.tree {
                    None => args.push(flag.into()),
                    Some(fd) => args.extend(["--model-tree".into(), fd.to_string().into()]),
                }
                args.extend([bind.inside.clone().into(), bind.host.clone().into()]);
            }
        }
        for device in &self.devices {
            args.extend(["--device".into(), device.clone().into()]);
        }
        args.extend(["--tmp-bytes".into(), self.tmp_bytes.to_string().into()]);
        for (limit, value) in &self.limits {
            args.extend([
                "--rlimit".into(),
                limit.name().into(),
                value.to_string().into(),
            ]);
        }
        for weaker in &self.weaker {
            args.extend(["--allow-weaker".into(), weaker.name().into()]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }

    /// Reads a command line written by [`Plan::to_args`], checking every value.
    pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.to_str().and_then(known_flag) else {
                return Err(PlanError::UnknownArgument(arg));
            };
            if flag == "--" {
                plan.command = args.by_ref().collect();
                break;
            }
            let mut value = |count| args.next().ok_or(PlanError::MissingValue { flag, count });
            match flag {
                "--root" => plan.root = value(1)?.into(),
                "--file" => {
                    let inside = utf8(flag, value(2)?)?;
                    let host = value(2)?.into();
                    if !inside.starts_with('/') || inside.split('/').any(|c| c == "..") {
                        return Err(PlanError::BadInsidePath(inside));
                    }
                    plan.files.push(Bind {
                        inside,
                        host,
                        tree: None,
                    });
                }
                "--model" | "--model-tree" => {
                    let tree = match flag {
                        "--model-tree" => {
                            let fd = number(flag, value(3)?)?;
                            // 0 to 2 are the protocol's pipes and the log.
                            match i32::try_from(fd) {
                                Ok(fd) if fd > 2 => Some(fd),
                                _ => return Err(PlanError::BadTreeFd(fd)),
                            }
                        }
                        _ => None,
                    };
                    let count = if tree.is_some() { 3 } else { 2 };
                    let inside = utf8(flag, value(count)?)?;
                    let host = value(count)?.into();
                    if inside.is_empty() || inside == "." || inside == ".." || inside.contains('/')
                    {
                        return Err(PlanError::BadModelName(inside));
                    }
                    plan.models.push(Bind { inside, host, tree });
                }
                "--device" => {
                    let device = PathBuf::from(value(1)?);
                    // Only the NVIDIA nodes: nothing else of the host's /dev is ever handed in.
                    let name = device
                        .strip_prefix("/dev")
                        .ok()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if !name.starts_with("nvidia") || name.contains('/') {
                        return Err(PlanError::NotAGpuNode(device));
                    }
                    plan.devices.push(device);
                }
                "--tmp-bytes" => plan.tmp_bytes = number(flag, value(1)?)?,
                "--rlimit" => {
                    let name = utf8(flag, value(2)?)?;
                    let limit = Limit::ALL
                        .into_iter()
                        .find(|l| l.name() == name)
                        .ok_or(PlanError::UnknownLimit(name))?;
                    plan.limits.push((limit, number(flag, value(2)?)?));
                }
                "--allow-weaker" => plan.weaker.push(utf8(flag, value(1)?)?.parse()?),
                _ => unreachable!("known_flag lists only the flags matched here"),
            }
        }
        if plan.root.as_os_str().is_empty() {
            return Err(PlanError::NoRoot);
        }
        if plan.command.is_empty() {
            return Err(PlanError::NoCommand);
        }
        Ok(plan)
    }
}

fn known_flag(arg: &str) -> Option<&'static str> {
    [
        "--root",
        "--file",
        "--model",
        "--model-tree",
        "--device",
        "--tmp-bytes",
        "--rlimit",
        "--allow-weaker",
        "--",
    ]
    .into_iter()
    .find(|flag| *flag == arg)
}

fn utf8(flag: &'static str, value: OsString) -> Result<String, PlanError> {
    value
        .into_string()
        .map_err(|value| PlanError::NotUtf8 { flag, value })
}

fn number(flag: &'static str, value: OsString) -> Result<u64, PlanError> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or(PlanError::NotANumber { flag, value })
}

/// For messages: a path or argument as text, whatever its bytes.
pub fn shown(value: &OsStr) -> String {
    value.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn full_plan() -> Plan {
        Plan {
            root: "/tmp/tfsandbox-1-x".into(),
            files: vec![Bind {
                inside: "/usr/lib/libc.so.6".into(),
                host: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                tree: None,
            }],
            models: vec![
                Bind {
                    inside: "a=b".into(),
                    host: "/models/a=b".into(),
                    tree: None,
                },
                Bind {
                    inside: "odd".into(),
                    host: OsString::from_vec(b"/srv/caf\xe9 models/--root".to_vec()).into(),
                    tree: Some(7),
                },
            ],
            devices: vec!["/dev/nvidia0".into()],
            tmp_bytes: 12345,
            limits: vec![(Limit::AddressSpace, 8 << 30), (Limit::Core, 0)],
            weaker: vec![Weaker::Landlock, Weaker::Cgroup],
            command: vec![
                "/lib64/ld-linux-x86-64.so.2".into(),
                "--".into(),
                "=".into(),
            ],
        }
    }

    #[test]
    fn a_plan_round_trips_through_its_command_line() {
        let plan = full_plan();
        assert_eq!(Plan::parse(plan.to_args()), Ok(plan));
    }

    #[test]
    fn bad_values_are_named() {
        let with = |extra: &[&str]| {
            let mut args: Vec<OsString> = vec!["--root".into(), "/r".into()];
            args.extend(extra.iter().map(OsString::from));
            args.extend(["--".into(), "/bin/true".into()]);
            Plan::parse(args)
        };
        assert_eq!(
            with(&["--model", "../x", "/h"]),
            Err(PlanError::BadModelName("../x".into()))
        );
        assert_eq!(
            with(&["--model-tree", "1", "m", "/h"]),
            Err(PlanError::BadTreeFd(1))
        );
        assert_eq!(
            with(&["--file", "relative", "/h"]),
            Err(PlanError::BadInsidePath("relative".into()))
        );
        assert_eq!(
            with(&["--device", "/dev/sda"]),
            Err(PlanError::NotAGpuNode("/dev/sda".into()))
        );
        assert_eq!(
            with(&["--rlimit", "stack", "1"]),
            Err(PlanError::UnknownLimit("stack".into()))
        );
        assert_eq!(
            with(&["--allow-weaker", "seccomp"]),
            Err(PlanError::UnknownWeaker("seccomp".into()))
        );
        assert!(matches!(
            with(&["--tmp-bytes", "lots"]),
            Err(PlanError::NotANumber { .. })
        ));
        assert_eq!(
            Plan::parse(["--root".into(), "/r".into(), "--model".into(), "m".into()]),
            Err(PlanError::MissingValue {
                flag: "--model",
                count: 2
            })
        );
        assert_eq!(
            Plan::parse(["--root".into(), "/r".into()]),
            Err(PlanError::NoCommand)
        );
    }
}
