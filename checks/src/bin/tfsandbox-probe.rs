//! tfsandbox-probe: started by a runtime in the worker's place, with the worker's exact sandbox, it
//! tries to get out and reports how each attempt ended, one JSON object per line on stdout.
//!
//! It reads its targets (a host secret's path, a host pid, a mounted model) as one JSON line on
//! stdin. Where a call is made with a bad pointer or descriptor, that is on purpose: a call the
//! sandbox allows then fails with EFAULT or EBADF, one it blocks with EPERM (bubblewrap's trick),
//! so the outcome tells which happened without doing harm either way.
//!
//! No attempt ever addresses anything but loopback.
//!
//! Its unsafe blocks are those raw system calls, one per attempt, each with constants, null or
//! deliberately bad pointers and descriptors, and nothing read back but the result; so they carry
//! no SAFETY comment each.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::io::{BufRead, Write};

use serde_json::{json, Value};

fn main() {
    // Where the worker's protocol goes, the probe's targets and reports go too.
    tfsandbox_checks::protocol_on_stdio();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let targets: Value = serde_json::from_str(&line).unwrap_or(json!({}));
    let text = |key: &str| targets[key].as_str().unwrap_or("").to_string();
    let mode = text("mode");
    match mode.as_str() {
        // Each of these ends the process when the sandbox holds; the host judges how it ended.
        "i386" => i386_syscall(),
        // SAFETY: getpid through the x32 numbering; no arguments.
        "x32" => report(
            "x32 system call",
            check(unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) }),
        ),
        "cpu" => loop {
            std::hint::black_box(0u64);
        },
        _ => attempts(&targets),
    }
}

fn report(name: &str, outcome: Result<String, String>) {
    let (denied, detail) = match outcome {
        Ok(detail) => (false, detail),
        Err(detail) => (true, detail),
    };
    let line = json!({ "attempt": name, "denied": denied, "detail": detail });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn errno() -> String {
    let error = std::io::Error::last_os_error();
    let code = error.raw_os_error().unwrap_or(0);
    errno_name(code).to_string()
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::EFBIG => "EFBIG",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTTY => "ENOTTY",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        _ => "other errno",
    }
}

/// A call's result: `Err(errno)` when the sandbox stopped it, `Ok(...)` when it went through,
/// including to EFAULT or EBADF on the deliberately bad arguments (the kernel ran the call).
fn check(result: libc::c_long) -> Result<String, String> {
    if result >= 0 {
        return Ok(format!("returned {result}"));
    }
    match errno().as_str() {
        reached @ ("EFAULT" | "EBADF") => Ok(format!("reached the kernel ({reached})")),
        stopped => Err(stopped.to_string()),
    }
}

fn c(path: &str) -> CString {
    CString::new(path).expect("no NUL in paths")
}

fn attempts(targets: &Value) {
    let text = |key: &str| targets[key].as_str().unwrap_or("").to_string();
    let secret = text("secret");
    let model = text("model");
    let host_pid = targets["host_pid"].as_i64().unwrap_or(1) as libc::pid_t;
    let port = targets["port"].as_u64().unwrap_or(9) as u16;

    // SAFETY (all blocks below): raw system calls with valid or deliberately invalid arguments;
    // none writes through a pointer this program does not own.
    report(
        "create an AF_INET socket",
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) } as _),
    );
    report("connect to the host on loopback", connect_loopback(port));
    report(
        "connect to the engine socket",
        connect_unix("/var/run/docker.sock"),
    );
    report("read a host secret", read_file(&secret));
    report("read /etc/shadow", read_file("/etc/shadow"));
    report("write under /", create_file("/escape-probe"));
    report(
        "write into the model folder",
        create_file(&format!("{model}/escape-probe")),
    );
    report("write /proc/sys", create_file("/proc/sys/kernel/hostname"));
    report("exec a file from /tmp", exec_from_tmp());
    report(
        "fork",
        check(unsafe { libc::fork() } as _).map(|pid| {
            if pid == "returned 0" {
                unsafe { libc::_exit(0) }
            }
            pid
        }),
    );
    report("allocate 1 TiB", allocate(1 << 40));
    report("exhaust file descriptors", fd_bomb());
    report("write a huge file", huge_file());
    report(
        "ptrace the parent",
        check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, host_pid, 0, 0) }),
    );
    report(
        "process_vm_readv",
        check(unsafe {
            libc::syscall(
                libc::SYS_process_vm_readv,
                1,
                std::ptr::dangling::<libc::iovec>(),
                1,
                std::ptr::dangling::<libc::iovec>(),
                1,
                0,
            )
        }),
    );
    report(
        "mount a tmpfs",
        check(unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        } as _),
    );
    report(
        "unshare a user namespace",
        check(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as _),
    );
    report("setns", check(unsafe { libc::setns(-1, 0) } as _));
    report(
        "bpf",
        check(unsafe { libc::syscall(libc::SYS_bpf, 5, 1usize, 128) }),
    );
    report(
        "perf_event_open",
        check(unsafe { libc::syscall(libc::SYS_perf_event_open, 1usize, 0, -1, -1, 0) }),
    );
    report(
        "keyctl",
        check(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) }),
    );
    report(
        "io_uring_setup",
        check(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, 1usize) }),
    );
    report(
        "userfaultfd",
        check(unsafe { libc::syscall(libc::SYS_userfaultfd, 0) }),
    );
    report(
        "TIOCSTI into the terminal",
        check(unsafe { libc::ioctl(0, libc::TIOCSTI, c"x".as_ptr()) } as _),
    );
    report(
        "signal a host process",
        check(unsafe { libc::kill(host_pid, 0) } as _),
    );
    report(
        "sethostname",
        check(unsafe { libc::sethostname(c"escaped".as_ptr(), 7) } as _),
    );
    report(
        "clone3 a new process",
        check(unsafe { libc::syscall(libc::SYS_clone3, 1usize, 88) }),
    );
    report("raise a capability", raise_capability());
    held_elsewhere(host_pid);
    hidden_host_state();
}

/// Calls a model has no use for, each blocked by seccomp (or Landlock), with arguments that would
/// make an allowed call fail harmlessly (EFAULT, EBADF).
fn held_elsewhere(host_pid: libc::pid_t) {
    let bad = std::ptr::dangling::<u8>();
    // SAFETY (all blocks below): raw system calls with invalid descriptors or pointers the kernel
    // checks before acting, or queries that change nothing.
    report(
        "memfd_create",
        check(unsafe { libc::syscall(libc::SYS_memfd_create, bad, 0) }),
    );
    report(
        "execveat",
        check(unsafe { libc::syscall(libc::SYS_execveat, -1, bad, bad, bad, 0) }),
    );
    report(
        "pidfd_open a host process",
        check(unsafe { libc::syscall(libc::SYS_pidfd_open, host_pid, 0) }),
    );
    report(
        "open_by_handle_at",
        check(unsafe { libc::syscall(libc::SYS_open_by_handle_at, -1, bad, 0) }),
    );
    report(
        "chroot",
        check(unsafe { libc::chroot(c"/tmp".as_ptr()) } as _),
    );
    report(
        "pivot_root",
        check(unsafe { libc::syscall(libc::SYS_pivot_root, bad, bad) }),
    );
    report(
        "fsopen",
        check(unsafe { libc::syscall(libc::SYS_fsopen, bad, 0) }),
    );
    report(
        "open_tree",
        check(unsafe { libc::syscall(libc::SYS_open_tree, -1, bad, 0) }),
    );
    report(
        "personality",
        check(unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu32) }),
    );
    report(
        "splice",
        check(unsafe { libc::syscall(libc::SYS_splice, -1, 0, -1, 0, 1, 0) }),
    );
    report(
        "vmsplice",
        check(unsafe { libc::syscall(libc::SYS_vmsplice, -1, bad, 1, 0) }),
    );
    report(
        "ptrace(TRACEME)",
        check(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) }),
    );
    report(
        "add_key",
        check(unsafe { libc::syscall(libc::SYS_add_key, bad, bad, bad, 0, 0) }),
    );
    report(
        "landlock_create_ruleset",
        check(unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0, 0, 1) }),
    );
    report(
        "PR_SET_MM",
        check(unsafe { libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_START_CODE, 0, 0, 0) } as _),
    );
    report(
        "clear the parent-death signal",
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) } as _),
    );
    report(
        "rename itself (PR_SET_NAME)",
        check(unsafe { libc::prctl(libc::PR_SET_NAME, c"sshd".as_ptr(), 0, 0, 0) } as _),
    );
    report("write /proc/self/mem", open_for_writing("/proc/self/mem"));
    report("write /dev/urandom", open_for_writing("/dev/urandom"));
    report("kill the sandbox's pid 1", kill_init());
}

fn open_for_writing(path: &str) -> Result<String, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map(|_| "opened for writing".to_string())
        .map_err(|e| errno_name(e.raw_os_error().unwrap_or(0)).to_string())
}

/// SIGKILL to the namespace's init: refused (Landlock scopes signals), or dropped by the kernel,
/// which delivers to a namespace's init only the signals it handles.
fn kill_init() -> Result<String, String> {
    // SAFETY: kill with plain integers.
    let sent = check(unsafe { libc::kill(1, libc::SIGKILL) } as _)?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SAFETY: signal 0 only asks whether pid 1 is there.
    if unsafe { libc::kill(1, 0) } == 0 || errno() == "EPERM" {
        Err("ignored by pid 1".into())
    } else {
        Ok(format!("{sent}; pid 1 is gone"))
    }
}

/// What of the host a sandbox shows: host-wide /proc files masked, no host environment, no
/// inherited descriptor.
fn hidden_host_state() {
    for file in ["/proc/cmdline", "/proc/loadavg", "/proc/locks"] {
        let outcome = match std::fs::read(file) {
            Ok(bytes) if bytes.is_empty() => Err("empty".to_string()),
            Ok(bytes) => Ok(format!("read {} bytes", bytes.len())),
            Err(e) => Err(errno_name(e.raw_os_error().unwrap_or(0)).to_string()),
        };
        report(&format!("read the host's {file}"), outcome);
    }
    let pressure = match std::fs::read_dir("/proc/pressure") {
        Ok(mut entries) => match entries.next() {
            None => Err("empty".to_string()),
            Some(_) => Ok("listed".to_string()),
        },
        Err(e) => Err(errno_name(e.raw_os_error().unwrap_or(0)).to_string()),
    };
    report("read the host's /proc/pressure", pressure);
    // What every runtime sets: the worker's own variables, and the engine's defaults.
    const OWN: &[&str] = &[
        tfsandbox_proto::worker_env::LOG,
        tfsandbox_proto::worker_env::MAX_MESSAGE_BYTES,
        tfsandbox_proto::worker_env::CGROUP,
        tfsandbox_proto::worker_env::PROTOCOL_IN,
        tfsandbox_proto::worker_env::PROTOCOL_OUT,
        "TFSANDBOX_LANDLOCK",
        "PATH",
        "HOSTNAME",
        "HOME",
    ];
    let foreign: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .filter(|k| !OWN.contains(&k.as_str()))
        .collect();
    report(
        "inherit the host's environment",
        if foreign.is_empty() {
            Err("none".into())
        } else {
            Ok(foreign.join(","))
        },
    );
    let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|fd| !["0", "1", "2"].contains(&fd.as_str()))
                .collect()
        })
        .unwrap_or_default();
    // One of them is the listing's own.
    report(
        "inherit a descriptor",
        if fds.len() <= 1 {
            Err("none but 0-2".into())
        } else {
            Ok(fds.join(","))
        },
    );
}

fn connect_loopback(port: u16) -> Result<String, String> {
    // SAFETY: socket/connect with a local, well-formed address.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(errno());
        }
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            &address as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&address) as u32,
        );
        if connected < 0 {
            return Err(errno());
        }
        Ok("connected".into())
    }
}

fn connect_unix(path: &str) -> Result<String, String> {
    // SAFETY: socket/connect with a well-formed local address.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(errno());
        }
        let mut address: libc::sockaddr_un = std::mem::zeroed();
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (slot, byte) in address.sun_path.iter_mut().zip(path.bytes()) {
            *slot = byte as libc::c_char;
        }
        if libc::connect(
            fd,
            &address as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&address) as u32,
        ) < 0
        {
            return Err(errno());
        }
        Ok("connected".into())
    }
}

fn read_file(path: &str) -> Result<String, String> {
    std::fs::read(path)
        .map(|bytes| format!("read {} bytes", bytes.len()))
        .map_err(|e| errno_name(e.raw_os_error().unwrap_or(0)).to_string())
}

fn create_file(path: &str) -> Result<String, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map(|_| "created".to_string())
        .map_err(|e| errno_name(e.raw_os_error().unwrap_or(0)).to_string())
}

fn exec_from_tmp() -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = "/tmp/escape-probe.sh";
    std::fs::write(path, "#!/bin/sh\nexit 0\n")
        .map_err(|e| format!("could not even write it: {e}"))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    let program = c(path);
    let argv = [program.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: valid null-terminated arrays; on success the process is replaced (an escape).
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(errno())
}

fn allocate(bytes: usize) -> Result<String, String> {
    // SAFETY: an anonymous mapping, never touched, unmapped at once.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(errno());
        }
        libc::munmap(p, bytes);
        Ok("mapped".into())
    }
}

fn fd_bomb() -> Result<String, String> {
    let mut held = Vec::new();
    for _ in 0..1_000_000 {
        match std::fs::File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(e) => {
                return Err(format!(
                    "{} after {} opened",
                    errno_name(e.raw_os_error().unwrap_or(0)),
                    held.len()
                ))
            }
        }
    }
    Ok(format!("{} opened", held.len()))
}

fn huge_file() -> Result<String, String> {
    // SAFETY: ignoring SIGXFSZ so that passing RLIMIT_FSIZE fails the write instead of killing.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let path = "/tmp/escape-probe-huge";
    let mut file = std::fs::File::create(path).map_err(|e| format!("could not create it: {e}"))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written: u64 = 0;
    // 64 GiB would be an escape from any limit this sandbox sets.
    while written < 64 << 30 {
        if let Err(e) = file.write_all(&chunk) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(format!(
                "{} after {} MiB",
                errno_name(e.raw_os_error().unwrap_or(0)),
                written >> 20
            ));
        }
        written += chunk.len() as u64;
    }
    Ok(format!("{} MiB written", written >> 20))
}

fn raise_capability() -> Result<String, String> {
    // SAFETY: prctl with integers: ask to add CAP_SYS_ADMIN (21) to the ambient set.
    check(unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, 21, 0, 0) } as _)
}

#[cfg(not(target_arch = "x86_64"))]
fn i386_syscall() {}

/// getpid through the i386 entry point; a sandbox that kills foreign architectures ends here.
#[cfg(target_arch = "x86_64")]
fn i386_syscall() {
    let pid: i32;
    // SAFETY: int 0x80 with eax = 20 (getpid on i386) touches no memory. rdi = -1: a kernel
    // that takes it as the x86-64 call 20 (writev, as gVisor's does) writes nothing (EBADF).
    unsafe {
        std::arch::asm!("int 0x80", inlateout("eax") 20 => pid, in("rdi") -1i64, options(nostack))
    };
    println!(
        "{}",
        json!({ "attempt": "i386 system call", "denied": false, "detail": format!("returned {pid}") })
    );
}
