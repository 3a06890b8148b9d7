//! The worker's exact shared-library closure: what the dynamic loader would load, and nothing else.
//!
//! Every DT_NEEDED is resolved the way the image's loader will: the given library folders first
//! (the image's entry point passes its one library folder with `--library-path`, which glibc
//! searches before any RUNPATH), then the needing object's RUNPATH/RPATH (with `$ORIGIN`), then
//! ld.so.conf and the default folders. Libraries TensorFlow dlopen()s come from the declared
//! manifest `dlopen.json`, resolved the same way and closed over in turn. The NVIDIA driver's own
//! libraries (`libcuda.so.1`, ...) are never part of a closure: they must match the host's kernel
//! module, so they come from the host at run time (see [`DRIVER_LIBRARY_DIRS`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Where the worker lies in the image.
pub const WORKER_PATH: &str = "/usr/bin/tfsandbox-worker";
/// Where the docker runtime's pid 1, `tfsandbox-init` (built with the jailer), lies in the image.
pub const INIT_PATH: &str = "/usr/bin/tfsandbox-init";
/// The one folder every library of the closure lies in; the loader is told exactly this path.
pub const LIBRARY_DIR: &str = "/usr/lib/tfsandbox";
/// Where the CUDA variant finds the driver's libraries. The NVIDIA container toolkit's legacy
/// mode (libnvidia-container, behind `docker run --gpus`) mounts them into `/usr/lib64` of an
/// image without `/etc/debian_version` (libnvidia-container's USR_LIB_DIR; this image has none),
/// as nix/image-config.nix says for the Nix image; the process runtime binds the host's own there.
pub const DRIVER_LIBRARY_DIR: &str = "/usr/lib64";
/// The toolkit's CDI mode mounts them at the host's own path instead, which on Debian and its
/// derivatives is the multiarch folder. The loader is told both, after [`LIBRARY_DIR`], so no
/// ld.so.cache is needed (the toolkit's ldconfig may not run on a read-only root).
pub const DRIVER_LIBRARY_DIRS: &[&str] = &[
    DRIVER_LIBRARY_DIR,
    if cfg!(target_arch = "aarch64") {
        "/usr/lib/aarch64-linux-gnu"
    } else {
        "/usr/lib/x86_64-linux-gnu"
    },
];

/// Why the worker's closure could not be resolved: the file and what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("worker closure: {0}")]
pub struct ClosureError(String);

const MANIFEST: &str = include_str!("dlopen.json");

/// Which libraries beyond DT_NEEDED an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Cpu,
    Cuda,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Cpu, Variant::Cuda];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Cpu => "cpu",
            Variant::Cuda => "cuda",
        }
    }
}

/// Whether `name` is one of the NVIDIA driver's user-space libraries, which belong to the host's
/// driver and are injected at run time, never copied into a closure.
pub fn is_driver_library(name: &str) -> bool {
    name.starts_with("libcuda.so")
        || name.starts_with("libcudadebugger.so")
        || name.starts_with("libnvidia-")
        || name.starts_with("libnvcuvid.so")
}

/// The libraries `variant` needs loaded by name at run time: the manifest's list of that name.
pub fn dlopen_manifest(variant: Variant) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_str(MANIFEST).expect("dlopen.json is JSON");
    serde_json::from_value(manifest[variant.name()].clone())
        .expect("dlopen.json lists the variant's libraries")
}

/// One file of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the image.
    pub image_path: String,
    /// The real file on the host.
    pub host_path: PathBuf,
    /// Why it is there ("the worker", "needed by libtensorflow_cc.so.2", ...).
    pub reason: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Closure {
    /// Sorted by image path.
    pub entries: Vec<Entry>,
    /// The program interpreter, at the path the worker names (e.g. /lib64/ld-linux-x86-64.so.2).
    pub interpreter: String,
    pub variant: Variant,
    /// Driver libraries some member names as DT_NEEDED: left out, found at run time in
    /// [`DRIVER_LIBRARY_DIRS`].
    pub driver_needed: BTreeSet<String>,
    /// Whether it holds the container init too ([`Closure::with_init`]), the image's entry point.
    pub init: bool,
}

/// Where the container init is built: beside the worker (`cargo build --bins`).
pub fn init_beside(worker: &Path) -> PathBuf {
    worker.with_file_name("tfsandbox-init")
}

impl Closure {
    /// Resolves the closure of `worker`. `library_dirs` are searched first for every library, the
    /// manifest's included, as the image's `--library-path` is (e.g. the CUDA build of
    /// libtensorflow and the nvidia libraries, which then win over the CPU library the worker was
    /// linked against: it names them only by soname).
    ///
    /// A worker laid out as in the image, `PREFIX/bin/tfsandbox-worker` beside a folder
    /// `PREFIX/lib/tfsandbox` (the release bundle, scripts/release.sh), brings its closure: that
    /// folder is searched next, and the loader in it stands in for the worker's interpreter.
    pub fn resolve(
        worker: &Path,
        variant: Variant,
        library_dirs: &[PathBuf],
    ) -> Result<Closure, ClosureError> {
        let worker = worker
            .canonicalize()
            .map_err(|e| ClosureError(format!("worker {}: {e}", worker.display())))?;
        let worker_elf = ElfInfo::read(&worker)?;
        let interpreter = worker_elf.interpreter.clone().ok_or_else(|| {
            ClosureError(format!(
                "{} has no program interpreter (is it static?)",
                worker.display()
            ))
        })?;
        let interpreter_name = file_name(Path::new(&interpreter));
        let bundled = bundled_library_dir(&worker);
        // The file bound at the interpreter's path: the bundle's loader, else the host's.
        let interpreter_file = bundled
            .as_ref()
            .map(|dir| dir.join(&interpreter_name))
            .filter(|loader| loader.is_file())
            .unwrap_or_else(|| PathBuf::from(&interpreter));
        let library_dirs: Vec<PathBuf> = library_dirs.iter().cloned().chain(bundled).collect();
        let resolver = Resolver::new(&library_dirs, &worker_elf);

        let mut needed_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut driver_needed = BTreeSet::new();
        // (soname, who needs it, the needing object and its search path)
        let mut queue: VecDeque<(String, String, PathBuf, ElfInfo)> = worker_elf
            .needed
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    "the worker".to_string(),
                    worker.clone(),
                    worker_elf.clone(),
                )
            })
            .collect();
        let mut manifest = dlopen_manifest(variant).into_iter();
        // The dlopen() manifest once DT_NEEDED is exhausted: loaded by name, so searched like a
        // DT_NEEDED of the worker's libraries (the given folders first).
        while let Some((name, by, object, info)) = queue.pop_front().or_else(|| {
            manifest.next().map(|name| {
                (
                    name,
                    "dlopen() manifest".to_string(),
                    worker.clone(),
                    worker_elf.clone(),
                )
            })
        }) {
            if is_driver_library(&name) {
                driver_needed.insert(name);
                continue;
            }
            needed_by
                .entry(name.clone())
                .or_default()
                .insert(by.clone());
            if found.contains_key(&name) {
                continue;
            }
            let (path, library) = if name == interpreter_name {
                let path = real(&interpreter_file)?;
                let library = ElfInfo::read(&path)?;
                (path, library)
            } else {
                resolver.locate(&name, &object, &info).ok_or_else(|| {
                    ClosureError(format!(
                        "{name} (needed by {by}) was not found where the loader would look: {}",
                        resolver.describe(&object, &info)
                    ))
                })?
            };
            for dep in &library.needed {
                queue.push_back((dep.clone(), name.clone(), path.clone(), library.clone()));
            }
            found.insert(name, path);
        }

        let mut entries = vec![entry(WORKER_PATH.into(), &worker, "the worker".into())?];
        for (name, path) in &found {
            let reason = format!(
                "needed by {}",
                needed_by[name]
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // The loader is also libc's DT_NEEDED; it is satisfied by the running loader itself.
            if *name == interpreter_name {
                entries.push(entry(
                    interpreter.clone(),
                    path,
                    format!("the program interpreter; {reason}"),
                )?);
            } else {
                entries.push(entry(format!("{LIBRARY_DIR}/{name}"), path, reason)?);
            }
        }
        if !entries.iter().any(|e| e.image_path == interpreter) {
            let path = real(&interpreter_file)?;
            entries.push(entry(
                interpreter.clone(),
                &path,
                "the program interpreter".into(),
            )?);
        }
        entries.sort_by(|a, b| a.image_path.cmp(&b.image_path));
        Ok(Closure {
            entries,
            interpreter,
            variant,
            driver_needed,
            init: false,
        })
    }

    /// Adds the container init at `init` and its own closure, resolved the same way; a library
    /// both need must be the same file. The image's entry point becomes the init, which starts
    /// the worker ([`Closure::image_entrypoint`]).
    pub fn with_init(
        mut self,
        init: &Path,
        library_dirs: &[PathBuf],
    ) -> Result<Closure, ClosureError> {
        if !init.is_file() {
            return Err(ClosureError(format!(
                "the container init {} is missing (`cargo build --bins` builds it beside the worker)",
                init.display()
            )));
        }
        let theirs = Closure::resolve_cached(init, Variant::Cpu, library_dirs)?;
        if theirs.interpreter != self.interpreter {
            return Err(ClosureError(format!(
                "{} names the loader {}, the worker {}",
                init.display(),
                theirs.interpreter,
                self.interpreter
            )));
        }
        for mut entry in theirs.entries {
            if entry.image_path == WORKER_PATH {
                entry.image_path = INIT_PATH.into();
                entry.reason = "the container's init (pid 1)".into();
            }
            match self
                .entries
                .iter()
                .find(|e| e.image_path == entry.image_path)
            {
                Some(ours) if ours.host_path == entry.host_path => {}
                Some(ours) => {
                    return Err(ClosureError(format!(
                        "{} resolves to {} for the worker but {} for the init",
                        entry.image_path,
                        ours.host_path.display(),
                        entry.host_path.display()
                    )))
                }
                None => self.entries.push(entry),
            }
        }
        self.entries.sort_by(|a, b| a.image_path.cmp(&b.image_path));
        self.init = true;
        Ok(self)
    }

    /// The image's entry point: the init (when the closure holds it), told the worker's policy
    /// and command, else the worker's own [`Closure::entrypoint`].
    pub fn image_entrypoint(&self) -> Vec<String> {
        if !self.init {
            return self.entrypoint();
        }
        let policy = match self.variant {
            Variant::Cpu => "cpu",
            Variant::Cuda => "gpu",
        };
        let mut command: Vec<String> = [
            self.interpreter.as_str(),
            "--library-path",
            LIBRARY_DIR,
            INIT_PATH,
            "--seccomp",
            policy,
            "--",
        ]
        .map(String::from)
        .into();
        command.extend(self.entrypoint());
        command
    }

    /// The folders the loader searches, in order: the closure's, and for CUDA then the driver's.
    pub fn library_path(&self) -> String {
        match self.variant {
            Variant::Cpu => LIBRARY_DIR.into(),
            Variant::Cuda => format!("{LIBRARY_DIR}:{}", DRIVER_LIBRARY_DIRS.join(":")),
        }
    }

    /// The entry point: the loader, told exactly where the closure's libraries are.
    ///
    /// Spelled out instead of relying on an ld.so.cache or the worker's RUNPATH (which names a
    /// build-machine folder): nothing is guessed, and the image needs no ldconfig.
    pub fn entrypoint(&self) -> Vec<String> {
        vec![
            self.interpreter.clone(),
            "--library-path".into(),
            self.library_path(),
            WORKER_PATH.into(),
        ]
    }

    /// As [`Closure::resolve`], kept per worker file for as long as that file is unchanged:
    /// resolving parses every ELF file of the closure (hundreds of MB), and every sandbox start
    /// needs the closure.
    pub fn resolve_cached(
        worker: &Path,
        variant: Variant,
        library_dirs: &[PathBuf],
    ) -> Result<Closure, ClosureError> {
        type Key = (PathBuf, u64, Option<SystemTime>, Variant, Vec<PathBuf>);
        static RESOLVED: Mutex<BTreeMap<Key, Closure>> = Mutex::new(BTreeMap::new());
        let metadata = std::fs::metadata(worker).ok();
        let key = (
            worker.to_path_buf(),
            metadata.as_ref().map_or(0, |m| m.len()),
            metadata.and_then(|m| m.modified().ok()),
            variant,
            library_dirs.to_vec(),
        );
        if let Some(closure) = RESOLVED.lock().expect("closure cache").get(&key) {
            return Ok(closure.clone());
        }
        let closure = Closure::resolve(worker, variant, library_dirs)?;
        RESOLVED
            .lock()
            .expect("closure cache")
            .insert(key, closure.clone());
        Ok(closure)
    }

    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// `PREFIX/lib/tfsandbox` for a worker at `PREFIX/bin/tfsandbox-worker`, if that folder exists:
/// the image's layout ([`WORKER_PATH`], [`LIBRARY_DIR`]) under another prefix.
fn bundled_library_dir(worker: &Path) -> Option<PathBuf> {
    let prefix = worker.parent()?.parent()?;
    let dir = prefix.join(LIBRARY_DIR.strip_prefix("/usr/")?);
    dir.is_dir().then_some(dir)
}

/// What the loader reads from one ELF object.
#[derive(Debug, Clone)]
pub struct ElfInfo {
    pub needed: Vec<String>,
    /// DT_RUNPATH and DT_RPATH entries, `$ORIGIN` not yet expanded.
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
    pub interpreter: Option<String>,
    is_64: bool,
    machine: u16,
}

impl ElfInfo {
    pub fn read(path: &Path) -> Result<ElfInfo, ClosureError> {
        let bad = |e: String| ClosureError(format!("reading {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: mapped read-only and only read; a file changed underneath gives wrong data, not
        // memory unsafety beyond what reading it would.
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| bad(e.to_string()))?;
        let split = |list: &[&str]| -> Vec<String> {
            list.iter()
                .flat_map(|p| p.split(':'))
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        };
        Ok(ElfInfo {
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            runpath: split(&elf.runpaths),
            rpath: split(&elf.rpaths),
            interpreter: elf.interpreter.map(String::from),
            is_64: elf.is_64,
            machine: elf.header.e_machine,
        })
    }

    /// Whether the loader of `other` could load this object (same class and machine).
    fn fits(&self, other: &ElfInfo) -> bool {
        self.is_64 == other.is_64 && self.machine == other.machine
    }
}

/// The loader's search order for one needing object.
struct Resolver {
    first: Vec<PathBuf>,
    system: Vec<PathBuf>,
    target: ElfInfo,
}

impl Resolver {
    fn new(library_dirs: &[PathBuf], worker: &ElfInfo) -> Resolver {
        let mut system: Vec<PathBuf> =
            lddtree::ld_so_conf::parse_ld_so_conf("/etc/ld.so.conf", "/")
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect();
        // The loader's trusted folders, searched even when ld.so.conf does not list them.
        for dir in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
            system.push(PathBuf::from(dir));
        }
        Resolver {
            first: library_dirs.to_vec(),
            system,
            target: worker.clone(),
        }
    }

    /// glibc's order: DT_RPATH (only without DT_RUNPATH), `--library-path`, DT_RUNPATH, then
    /// ld.so.conf and the trusted folders.
    fn search_path(&self, object: &Path, info: &ElfInfo) -> Vec<PathBuf> {
        let origin = object.parent().unwrap_or(Path::new("/"));
        let expand = |p: &String| {
            PathBuf::from(
                p.replace("${ORIGIN}", &origin.to_string_lossy())
                    .replace("$ORIGIN", &origin.to_string_lossy()),
            )
        };
        let mut dirs = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(info.rpath.iter().map(expand));
        }
        dirs.extend(self.first.iter().cloned());
        dirs.extend(info.runpath.iter().map(expand));
        dirs.extend(self.system.iter().cloned());
        dirs
    }

    /// The first file of that name the loader could load, and what it needs in turn.
    fn locate(&self, name: &str, object: &Path, info: &ElfInfo) -> Option<(PathBuf, ElfInfo)> {
        self.search_path(object, info)
            .into_iter()
            .map(|dir| dir.join(name))
            .filter(|p| p.is_file())
            .filter_map(|p| p.canonicalize().ok())
            .filter_map(|p| ElfInfo::read(&p).ok().map(|lib| (p, lib)))
            .find(|(_, lib)| lib.fits(&self.target))
    }

    fn describe(&self, object: &Path, info: &ElfInfo) -> String {
        self.search_path(object, info)
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn entry(image_path: String, host_path: &Path, reason: String) -> Result<Entry, ClosureError> {
    let size = std::fs::metadata(host_path)
        .map_err(|e| ClosureError(format!("{}: {e}", host_path.display())))?
        .len();
    Ok(Entry {
        image_path,
        host_path: host_path.to_path_buf(),
        reason,
        size,
    })
}

fn real(path: &Path) -> Result<PathBuf, ClosureError> {
    path.canonicalize()
        .map_err(|e| ClosureError(format!("{}: {e}", path.display())))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
