//! tfsandbox-jailer: confines a worker before a single instruction of it runs, then execs it.
//!
//! The host starts it with the sandbox's layout and limits on the command line. It:
//! 1. dies with its parent, keeps no descriptor but 0-2;
//! 2. enters new user, mount, pid, net, ipc, uts and cgroup namespaces; the host writes its id
//!    maps (65534 inside) while it waits on a one-byte handshake over stdin/stdout;
//! 3. forks the namespace's pid 1, which builds a fresh root on a tmpfs (the closure's files
//!    bind-mounted read-only, each model read-only at /models/<name>, a noexec /tmp, /dev/null,
//!    zero and urandom, the GPU device nodes it was given (`--device`, read-write), a read-only
//!    /proc), pivots into it and drops the old root;
//! 4. becomes 65534, drops every capability, sets no_new_privs and the rlimits, applies Landlock
//!    and the seccomp allowlist (on every thread), and execs the worker.
//!
//! Where the kernel lacks a feature it fails, naming it, unless the host allowed that one weaker.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use landlock::{
    Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};
use rustix::thread::UnshareFlags;

const NOBODY: u32 = 65534;

/// Everything the host asks for, from the command line.
#[derive(Default)]
struct Plan {
    /// A host folder to build the new root on (the sandbox's own working folder).
    root: PathBuf,
    /// (path inside, host file), read-only.
    files: Vec<(String, PathBuf)>,
    /// (name under /models, host folder), read-only.
    models: Vec<(String, PathBuf)>,
    tmp_bytes: u64,
    rlimits: Vec<(Resource, u64)>,
    /// Features the host allowed to be weaker than asked: "landlock".
    weaker: Vec<String>,
    /// GPU device nodes (`/dev/nvidia*`), bound read-write at the same path. Any at all also
    /// adds the NVIDIA driver's ioctl requests to the seccomp allowlist.
    devices: Vec<PathBuf>,
    /// The loader and its arguments.
    command: Vec<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("tfsandbox-jailer: {message}");
            ExitCode::from(125)
        }
    }
}

enum Never {}

fn run() -> Result<Never, String> {
    let plan = parse(std::env::args().skip(1).collect())?;
    die_with_parent()?;
    close_inherited_fds()?;

    let namespaces = UnshareFlags::NEWUSER
        | UnshareFlags::NEWNS
        | UnshareFlags::NEWPID
        | UnshareFlags::NEWNET
        | UnshareFlags::NEWIPC
        | UnshareFlags::NEWUTS
        | UnshareFlags::NEWCGROUP;
    // SAFETY: no CLONE_FILES-like flag is involved; only namespaces are unshared.
    unsafe { rustix::thread::unshare_unsafe(namespaces) }
        .map_err(|e| format!("unshare(user, mount, pid, net, ipc, uts, cgroup): {e}"))?;
    handshake()?;
    // Files it creates while building the root must belong to an id the namespace maps (the
    // host's root, say, is not mapped); the capabilities stay until privileges are dropped.
    // SAFETY: plain syscalls on this single thread.
    unsafe {
        libc::setfsgid(NOBODY);
        libc::setfsuid(NOBODY);
    }
    // A change of credentials clears the parent-death signal: set it again.
    die_with_parent()?;

    // The new pid namespace takes effect for children: its pid 1 does the rest.
    // SAFETY: this process is single-threaded, so the child may do anything after fork.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            let error = confine_and_exec(&plan);
            eprintln!("tfsandbox-jailer: {error}");
            // SAFETY: leave without running the parent's exit handlers in the child.
            unsafe { libc::_exit(125) }
        }
        child => relay_exit(child),
    }
}

/// SIGKILL when the parent goes. The kernel clears this on fork and on every change of
/// credentials, so it is set again after each.
fn die_with_parent() -> Result<(), String> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    // The parent may have gone before the line above took effect. (A namespace's pid 1 sees no
    // parent at all: its parent lives outside; there the signal alone must do.)
    let is_namespace_init = rustix::process::getpid().as_raw_nonzero().get() == 1;
    if !is_namespace_init && rustix::process::getppid().is_none() {
        return Err("the parent is gone".into());
    }
    Ok(())
}

fn parse(args: Vec<String>) -> Result<Plan, String> {
    let mut plan = Plan {
        tmp_bytes: 1 << 30,
        ..Plan::default()
    };
    let mut args = args.into_iter();
    let pair = |value: String, flag: &str| -> Result<(String, String), String> {
        value
            .split_once('=')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| format!("{flag} wants NAME=VALUE, got '{value}'"))
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--root" => plan.root = PathBuf::from(value()?),
            "--file" => {
                let (inside, host) = pair(value()?, "--file")?;
                plan.files.push((inside, PathBuf::from(host)));
            }
            "--model" => {
                let (name, host) = pair(value()?, "--model")?;
                plan.models.push((name, PathBuf::from(host)));
            }
            "--tmp-bytes" => {
                plan.tmp_bytes = value()?.parse().map_err(|e| format!("--tmp-bytes: {e}"))?
            }
            "--rlimit" => {
                let (name, limit) = pair(value()?, "--rlimit")?;
                let resource = match name.as_str() {
                    "as" => Resource::As,
                    "core" => Resource::Core,
                    "cpu" => Resource::Cpu,
                    "fsize" => Resource::Fsize,
                    "nofile" => Resource::Nofile,
                    "nproc" => Resource::Nproc,
                    other => return Err(format!("unknown rlimit '{other}'")),
                };
                plan.rlimits.push((
                    resource,
                    limit.parse().map_err(|e| format!("--rlimit {name}: {e}"))?,
                ));
            }
            "--allow-weaker" => plan.weaker.push(value()?),
            "--device" => {
                let device = PathBuf::from(value()?);
                // Only the NVIDIA nodes: nothing else of the host's /dev is ever handed in.
                let name = device
                    .strip_prefix("/dev")
                    .ok()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                if !name.starts_with("nvidia") || name.contains('/') {
                    return Err(format!(
                        "--device takes /dev/nvidia* nodes only, got '{}'",
                        device.display()
                    ));
                }
                plan.devices.push(device);
            }
            "--" => {
                plan.command = args.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if plan.root.as_os_str().is_empty() || plan.command.is_empty() {
        return Err("usage: tfsandbox-jailer --root DIR [--file INSIDE=HOST]... [--model NAME=HOST]... -- COMMAND...".into());
    }
    Ok(plan)
}

fn close_inherited_fds() -> Result<(), String> {
    // SAFETY: closes descriptors this process does not use; nothing holds them.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if closed != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Asks the host for id maps (one byte out) and waits until they are written (one byte in).
/// Only the host, outside, may map ids other than its own.
fn handshake() -> Result<(), String> {
    // SAFETY: fds 0 and 1 are the pipes the host gave; ManuallyDrop keeps them open.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(1) });
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { fs::File::from_raw_fd(0) });
    stdout
        .write_all(b"M")
        .map_err(|e| format!("handshake: {e}"))?;
    let mut answer = [0u8; 1];
    stdin
        .read_exact(&mut answer)
        .map_err(|e| format!("handshake: the host did not answer: {e}"))?;
    if answer != *b"G" {
        return Err("handshake: the host refused".into());
    }
    Ok(())
}

/// Waits for the namespace's pid 1 and ends the same way, so the host sees the worker's status.
fn relay_exit(child: libc::pid_t) -> Result<Never, String> {
    // Only the child speaks the protocol: this process lets go of stdin/stdout.
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stdin(&null).map_err(|e| e.to_string())?;
    rustix::stdio::dup2_stdout(&null).map_err(|e| e.to_string())?;
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid on our own child.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        if waited == child {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: restoring the default action, then dying of the same signal.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

fn confine_and_exec(plan: &Plan) -> String {
    match confine(plan) {
        Ok(never) => match never {},
        Err(error) => error,
    }
}

fn confine(plan: &Plan) -> Result<Never, String> {
    die_with_parent()?;
    build_root(plan)?;
    rustix::system::sethostname(b"tfsandbox").map_err(|e| format!("sethostname: {e}"))?;
    let landlock = restrict_files_and_network(plan)?;
    drop_privileges(plan)?;
    // Last, since every change of credentials above cleared it.
    die_with_parent()?;
    install_seccomp(plan)?;

    let program = CString::new(plan.command[0].as_str()).map_err(|e| e.to_string())?;
    let args: Vec<CString> = plan
        .command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // The worker's environment: its log filter and what was applied, nothing else.
    let log = std::env::var("TFSANDBOX_LOG").unwrap_or_else(|_| "info".into());
    let env_strings = [
        format!("TFSANDBOX_LOG={log}"),
        format!("TFSANDBOX_LANDLOCK={landlock}"),
    ];
    let env: Vec<CString> = env_strings
        .iter()
        .map(|e| CString::new(e.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are null-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(format!(
        "exec {}: {}",
        plan.command[0],
        std::io::Error::last_os_error()
    ))
}

/// A tmpfs root holding only what the plan names; the host's root is gone afterwards.
fn build_root(plan: &Plan) -> Result<(), String> {
    let err = |what: &str, e: rustix::io::Errno| format!("{what}: {e}");
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| err("making mounts private", e))?;
    let root = &plan.root;
    rustix::mount::mount(
        "tmpfs",
        root,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"size=16m,mode=0755"),
    )
    .map_err(|e| err("mounting the new root", e))?;
    let inside = |path: &str| root.join(path.trim_start_matches('/'));

    for (path, host) in &plan.files {
        let target = inside(path);
        make_parent(&target)?;
        fs::write(&target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
        bind_read_only(host, &target, MountFlags::empty())?;
    }
    for (name, host) in &plan.models {
        let target = inside(&format!("/models/{name}"));
        fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        bind_read_only(host, &target, MountFlags::NOEXEC)?;
    }
    fs::create_dir_all(inside("/models")).map_err(|e| e.to_string())?;
    fs::create_dir_all(inside("/etc")).map_err(|e| e.to_string())?;
    fs::write(
        inside("/etc/passwd"),
        "nobody:x:65534:65534:nobody:/nonexistent:/nonexistent\n",
    )
    .map_err(|e| e.to_string())?;
    fs::write(inside("/etc/group"), "nobody:x:65534:\n").map_err(|e| e.to_string())?;

    let tmp = inside("/tmp");
    fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "tmpfs",
        &tmp,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(
            CString::new(format!("size={},mode=1777", plan.tmp_bytes))
                .expect("no NUL")
                .as_c_str(),
        ),
    )
    .map_err(|e| err("mounting /tmp", e))?;

    fs::create_dir_all(inside("/dev")).map_err(|e| e.to_string())?;
    for device in ["null", "zero", "urandom"] {
        let target = inside(&format!("/dev/{device}"));
        fs::write(&target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
        rustix::mount::mount_bind(format!("/dev/{device}").as_str(), &target)
            .map_err(|e| err(&format!("/dev/{device}"), e))?;
    }
    for device in &plan.devices {
        let target = inside(&device.to_string_lossy());
        fs::write(&target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
        rustix::mount::mount_bind(device, &target)
            .map_err(|e| err(&device.display().to_string(), e))?;
    }

    let proc = inside("/proc");
    fs::create_dir_all(&proc).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "proc",
        &proc,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC | MountFlags::RDONLY,
        None,
    )
    .map_err(|e| err("mounting /proc", e))?;

    // Into the new root; the old one is detached, so no path leads back to the host.
    rustix::process::chdir(root).map_err(|e| err("chdir", e))?;
    rustix::process::pivot_root(".", ".").map_err(|e| err("pivot_root", e))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(|e| err("detaching the old root", e))?;
    rustix::process::chdir("/").map_err(|e| err("chdir /", e))?;
    rustix::mount::mount_remount(
        "/",
        MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        "",
    )
    .map_err(|e| err("making / read-only", e))?;
    rustix::process::chdir("/tmp").map_err(|e| err("chdir /tmp", e))?;
    Ok(())
}

fn make_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) => {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))
        }
        None => Ok(()),
    }
}

/// Binds `host` at `target`, then remounts the bind read-only, nosuid, nodev and `extra`, keeping
/// the flags the source mount has (a user namespace may not clear them).
fn bind_read_only(host: &Path, target: &Path, extra: MountFlags) -> Result<(), String> {
    rustix::mount::mount_bind(host, target)
        .map_err(|e| format!("binding {}: {e}", host.display()))?;
    let kept = rustix::fs::statvfs(target)
        .map(|s| s.f_flag)
        .map_err(|e| format!("{}: {e}", target.display()))?;
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
        .map_err(|e| format!("making {} read-only: {e}", target.display()))
}

/// Landlock: read what the root holds, write only /tmp and /dev/null, execute only the loader,
/// no TCP, no signals or abstract sockets beyond the sandbox. Returns what was enforced.
fn restrict_files_and_network(plan: &Plan) -> Result<String, String> {
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let path = |p: &str| PathFd::new(p).map_err(|e| format!("landlock: {p}: {e}"));
    let read = AccessFs::from_read(abi);
    let loader = plan.command[0].as_str();
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rule(PathBeneath::new(path("/")?, read & !AccessFs::Execute))
        .map_err(err)?
        .add_rule(PathBeneath::new(
            path(loader)?,
            AccessFs::Execute | AccessFs::ReadFile,
        ))
        .map_err(err)?
        .add_rule(PathBeneath::new(
            path("/tmp")?,
            AccessFs::from_all(abi) & !AccessFs::Execute,
        ))
        .map_err(err)?
        .add_rule(PathBeneath::new(
            path("/dev/null")?,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))
        .map_err(err)?;
    // GPU nodes: opened read-write and driven by ioctl (Landlock ABI 5 filters device ioctls).
    for device in &plan.devices {
        let fd = PathFd::new(device).map_err(|e| format!("landlock: {}: {e}", device.display()))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(
                fd,
                AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
            ))
            .map_err(err)?;
    }
    let status = ruleset.restrict_self().map_err(err)?;
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced",
        RulesetStatus::PartiallyEnforced => "partially enforced",
        RulesetStatus::NotEnforced => "not enforced",
    };
    if status.ruleset != RulesetStatus::FullyEnforced
        && !plan.weaker.iter().any(|w| w == "landlock")
    {
        return Err(format!(
            "landlock is {enforced} on this kernel (ABI {abi:?} asked); allow it weaker to run anyway"
        ));
    }
    Ok(format!("{enforced} (ABI {abi:?})"))
}

/// Becomes nobody with no capability at all, no way to gain one, and the host's limits.
fn drop_privileges(plan: &Plan) -> Result<(), String> {
    for (resource, limit) in &plan.rlimits {
        rustix::process::setrlimit(
            *resource,
            Rlimit {
                current: Some(*limit),
                maximum: Some(*limit),
            },
        )
        .map_err(|e| format!("setrlimit {resource:?}: {e}"))?;
    }
    // Only while the capability to do so lasts: empty the bounding set.
    for capability in 0..=63u32 {
        // SAFETY: prctl with integer arguments; EINVAL past the last capability is expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong, 0, 0, 0) };
    }
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    let nobody_gid = rustix::process::Gid::from_raw(NOBODY);
    let nobody_uid = rustix::process::Uid::from_raw(NOBODY);
    rustix::thread::set_thread_res_gid(nobody_gid, nobody_gid, nobody_gid)
        .map_err(|e| format!("setresgid: {e}"))?;
    rustix::thread::set_thread_res_uid(nobody_uid, nobody_uid, nobody_uid)
        .map_err(|e| format!("setresuid: {e}"))?;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: rustix::thread::CapabilitySet::empty(),
            permitted: rustix::thread::CapabilitySet::empty(),
            inheritable: rustix::thread::CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("dropping capabilities: {e}"))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("no_new_privs: {e}"))?;
    Ok(())
}

fn install_seccomp(plan: &Plan) -> Result<(), String> {
    let policy = if plan.devices.is_empty() {
        tfsandbox_jailer::seccomp::Policy::Cpu
    } else {
        tfsandbox_jailer::seccomp::Policy::Gpu
    };
    let allow =
        tfsandbox_jailer::seccomp::allowlist_program_for(policy).map_err(|e| e.to_string())?;
    let enosys = tfsandbox_jailer::seccomp::enosys_program().map_err(|e| e.to_string())?;
    // TSYNC: every thread gets them (there is one now; the worker's come later and inherit them).
    seccompiler::apply_filter_all_threads(&allow).map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter_all_threads(&enosys).map_err(|e| format!("seccomp: {e}"))?;
    Ok(())
}
