//! The confinement shared by every runtime: the host↔jailer contract (`plan`), the process
//! runtime's confinement (`confine`), and which system calls a worker may make (here and in
//! `seccomp`).
//!
//! The list was measured: the worker ran every fixture under `strace -f` and made exactly the
//! calls in the first groups below; the rest are what glibc and the Rust runtime need on paths the
//! fixtures did not take (thread exit, aborts, timers). Everything else fails with EPERM.
//! The `process` runtime installs it with seccompiler; the `docker` runtime hands the engine the
//! same list as a seccomp profile.

#[cfg(feature = "confine")]
pub mod confine;
#[cfg(feature = "confine")]
pub mod error;
pub mod plan;
pub mod seccomp;

/// System calls a worker may make without conditions, by name.
pub const ALLOWED_SYSCALLS: &[&str] = &[
    // Files, inside what Landlock and the mounts let it see.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "openat",
    "open",
    "newfstatat",
    "fstat",
    "stat",
    "lstat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getdents64",
    "getcwd",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "ftruncate",
    "fsync",
    "fdatasync",
    "flock",
    "mkdirat",
    "unlinkat",
    "renameat",
    "renameat2",
    "umask",
    // Waiting and local plumbing (no socket() of any family).
    "pipe2",
    "socketpair",
    "eventfd2",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "shutdown",
    // Memory.
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "brk",
    "mincore",
    "membarrier",
    "get_mempolicy",
    // Threads, signals, identity, time.
    "futex",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "exit",
    "exit_group",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "tgkill",
    "gettid",
    "getpid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "uname",
    "sysinfo",
    "prlimit64",
    "getrlimit",
    "getrusage",
    "times",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_yield",
    "sched_getscheduler",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "getrandom",
    "arch_prctl",
    "restart_syscall",
    // Only the loader, the one file Landlock lets it execute: the jailer's own hand-over.
    "execve",
    // Filters only ever add restrictions; the jailer installs its second one with this.
    "seccomp",
];

/// `clone` is allowed only for threads (CLONE_THREAD set) and without any of these flags: no new
/// processes, so no fork bomb, and no new namespaces from inside.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// The mask and value `clone`'s flags must match: CLONE_THREAD and no namespace flag.
pub const CLONE_MASK: u64 = CLONE_NAMESPACE_FLAGS | libc::CLONE_THREAD as u64;
pub const CLONE_REQUIRED: u64 = libc::CLONE_THREAD as u64;

/// `ioctl` is allowed only with these requests: terminal probing and close-on-exec/non-blocking.
// libc's request type differs between targets; here it may already be u64.
#[allow(clippy::unnecessary_cast)]
pub const ALLOWED_IOCTLS: &[u64] = &[
    libc::TCGETS as u64,
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
];

/// `prctl` is allowed only with these options, which read or only add restrictions. Measured: the
/// worker itself calls only PR_SET_NAME (tokio naming its threads, which copes with EPERM), and
/// the jailer's second seccomp filter is installed after PR_SET_NO_NEW_PRIVS under the first.
/// Everything else is refused: PR_SET_PDEATHSIG would let the worker outlive its parent,
/// PR_SET_NAME pass for another program in the host's `ps`, PR_SET_MM rewrite its memory map.
pub const ALLOWED_PRCTLS: &[u64] = &[
    libc::PR_GET_DUMPABLE as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_CAPBSET_READ as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
];

/// `clone3` takes its flags in memory, out of a filter's reach: it answers ENOSYS, and glibc falls
/// back to `clone`, whose flags the filter checks.
pub const ENOSYS_SYSCALLS: &[&str] = &["clone3"];

/// With GPUs only: the NVIDIA driver's requests. CUDA talks to `/dev/nvidiactl` and
/// `/dev/nvidia<N>` with `_IOWR('F', nr, size)` (every request whose type byte is `'F'`), and to
/// `/dev/nvidia-uvm` with plain small numbers (below 256: `request & UVM_IOCTL_MASK == 0`) plus
/// the two in [`UVM_IOCTLS`]. Taken from the open kernel modules' headers (nv-ioctl-numbers.h,
/// uvm_ioctl.h, uvm_linux_ioctl.h), not measured under a GPU: unverified until a GPU run
/// exercises it. Outside the NVIDIA nodes these numbers mean little: the small ones include
/// FIBMAP (needs CAP_SYS_RAWIO, which the worker lacks) and FIGETBSZ (a block size).
pub const NVIDIA_IOCTL_TYPE_MASK: u64 = 0xff00;
pub const NVIDIA_IOCTL_TYPE: u64 = (b'F' as u64) << 8;
pub const UVM_IOCTL_MASK: u64 = 0xffff_ff00;
/// UVM_INITIALIZE and UVM_DEINITIALIZE.
pub const UVM_IOCTLS: &[u64] = &[0x3000_0001, 0x3000_0002];

/// What the docker runtime's pid 1 (`tfsandbox-init`) calls beyond the worker's list: it starts
/// the worker, relays its stdin, kills and reaps it. The engine's profile allows these to every
/// process of the container; the worker then installs its own allowlist, so it never has them.
pub const INIT_EXTRA_SYSCALLS: &[&str] = &["wait4", "kill", "splice", "pidfd_open", "prctl"];
