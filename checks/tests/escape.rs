//! The escape-attempt suite: every attempt, in each runtime's production sandbox, ends exactly as
//! listed here. `tfsandbox-escape --runtime R` prints the same table.

use tfsandbox::RuntimeKind;
use tfsandbox_checks::escape::all_attempts;

/// How an attempt ends in one runtime.
type Outcome = Option<&'static str>;

/// (attempt, how it ends in the process runtime, in the docker runtime, in the gvisor runtime); a
/// detail is matched as a prefix ("EMFILE" for "EMFILE after 1021 opened"); `None`: not tried in
/// that runtime; "ALLOWED " before the detail: known to go through there, and said so in the
/// README; "contained: " (gvisor): it went through, into gVisor's kernel only, and the harness
/// checked what shows that (see `fatal_attempts`). On gvisor every EPERM of a call gVisor's
/// kernel implements (fork, memfd_create, PR_SET_NAME, splice...) is the jailer's policy biting,
/// applied there through `--oci-seccomp`; this runsc answers every refusal with EPERM.
const EXPECTED: &[(&str, Outcome, Outcome, Outcome)] = &[
    (
        "create an AF_INET socket",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "connect to the host on loopback",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "connect to the engine socket",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "read a host secret",
        Some("ENOENT"),
        Some("ENOENT"),
        Some("ENOENT"),
    ),
    (
        "read /etc/shadow",
        Some("ENOENT"),
        Some("ENOENT"),
        Some("ENOENT"),
    ),
    (
        "write under /",
        Some("EROFS"),
        Some("EROFS"),
        Some("EACCES"),
    ),
    (
        "write into the model folder",
        Some("EROFS"),
        Some("EROFS"),
        Some("EACCES"),
    ),
    (
        "write /proc/sys",
        Some("EROFS"),
        Some("EROFS"),
        Some("EACCES"),
    ),
    (
        "exec a file from /tmp",
        Some("EACCES"),
        Some("EACCES"),
        Some("EACCES"),
    ),
    ("fork", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "allocate 1 TiB",
        Some("ENOMEM"),
        Some("ENOMEM"),
        Some("ENOMEM"),
    ),
    (
        "exhaust file descriptors",
        Some("EMFILE"),
        Some("EMFILE"),
        Some("EMFILE"),
    ),
    (
        "write a huge file",
        Some("ENOSPC"),
        Some("ENOSPC"),
        Some("ENOSPC"),
    ),
    (
        "ptrace the parent",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "process_vm_readv",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("mount a tmpfs", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "unshare a user namespace",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("setns", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("bpf", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "perf_event_open",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("keyctl", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "io_uring_setup",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("userfaultfd", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "TIOCSTI into the terminal",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "signal a host process",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("sethostname", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "clone3 a new process",
        Some("ENOSYS"),
        Some("ENOSYS"),
        Some("ENOSYS"),
    ),
    (
        "raise a capability",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("memfd_create", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("execveat", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "pidfd_open a host process",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "open_by_handle_at",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("chroot", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("pivot_root", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("fsopen", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("open_tree", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("personality", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("splice", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    ("vmsplice", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "ptrace(TRACEME)",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("add_key", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "landlock_create_ruleset",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    ("PR_SET_MM", Some("EPERM"), Some("EPERM"), Some("EPERM")),
    (
        "clear the parent-death signal",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "rename itself (PR_SET_NAME)",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "write /proc/self/mem",
        Some("EROFS"),
        Some("EROFS"),
        Some("EACCES"),
    ),
    // Landlock refuses it; the docker runtime has no Landlock, and a write there only mixes
    // bytes into the kernel's pool without crediting entropy; gvisor's /dev is an empty
    // read-only tmpfs.
    (
        "write /dev/urandom",
        Some("EACCES"),
        Some("ALLOWED opened for writing"),
        Some("EROFS"),
    ),
    // Landlock scopes signals; in docker the kernel drops what pid 1 set no handler for.
    (
        "kill the sandbox's pid 1",
        Some("EPERM"),
        Some("EPERM"),
        Some("EPERM"),
    ),
    (
        "read the host's /proc/cmdline",
        Some("empty"),
        Some("empty"),
        Some("empty"),
    ),
    (
        "read the host's /proc/loadavg",
        Some("empty"),
        Some("empty"),
        Some("empty"),
    ),
    (
        "read the host's /proc/locks",
        Some("empty"),
        Some("empty"),
        Some("ENOENT"),
    ),
    (
        "read the host's /proc/pressure",
        Some("empty"),
        Some("empty"),
        Some("ENOENT"),
    ),
    (
        "inherit the host's environment",
        Some("none"),
        Some("none"),
        Some("none"),
    ),
    (
        "inherit a descriptor",
        Some("none but 0-2"),
        Some("none but 0-2"),
        Some("none but 0-2"),
    ),
    (
        "end the probe early",
        Some("exit status: 0"),
        Some("exit status: 0"),
        Some("exit status: 0"),
    ),
    // The jailer's filter refuses x32 numbers; the engine's (libseccomp) kills on them; gVisor
    // applies the jailer's list. An i386 call under gVisor's ptrace platform is run as the
    // x86-64 call of its number, inside gVisor's kernel (see `fatal_attempts`).
    (
        "x32 system call",
        Some("EPERM"),
        Some("signal: 31"),
        Some("EPERM"),
    ),
    (
        "i386 system call",
        Some("signal: 31"),
        Some("signal: 31"),
        Some("contained: returned -9"),
    ),
    // Only the process runtime has a CPU-time limit to pass; docker and gvisor throttle CPU
    // through the cgroup instead.
    (
        "busy loop past the CPU limit",
        Some("signal: 9"),
        None,
        None,
    ),
];

async fn every_attempt_ends_as_expected(runtime: RuntimeKind) {
    let attempts = all_attempts(runtime).await;
    let mut problems = Vec::new();
    for (name, process, docker, gvisor) in EXPECTED {
        let expected = match runtime {
            RuntimeKind::Process => process,
            RuntimeKind::Docker => docker,
            RuntimeKind::Gvisor => gvisor,
        };
        let found = attempts.iter().find(|a| a.attempt == *name);
        match (expected, found) {
            (None, None) => {}
            (None, Some(a)) => problems.push(format!(
                "{name}: not expected in this runtime, got {}",
                a.detail
            )),
            (Some(want), None) => problems.push(format!("{name}: expected {want}, not tried")),
            (Some(want), Some(a))
                if match want.strip_prefix("ALLOWED ") {
                    Some(allowed) => a.denied || !a.detail.starts_with(allowed),
                    None => !a.denied || !a.detail.starts_with(want),
                } =>
            {
                problems.push(format!(
                    "{name}: expected {want}, got {} (denied: {})",
                    a.detail, a.denied
                ))
            }
            _ => {}
        }
    }
    for a in &attempts {
        if !EXPECTED.iter().any(|(name, ..)| *name == a.attempt) {
            problems.push(format!(
                "{}: not in the expected table ({})",
                a.attempt, a.detail
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{runtime:?}:\n  {}",
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn process() {
    every_attempt_ends_as_expected(RuntimeKind::Process).await
}

#[tokio::test]
async fn docker() {
    every_attempt_ends_as_expected(RuntimeKind::Docker).await
}

#[tokio::test]
async fn gvisor() {
    every_attempt_ends_as_expected(RuntimeKind::Gvisor).await
}
