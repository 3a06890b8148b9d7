//! The worker's exact shared-library closure: what the dynamic loader would load, and nothing else.
//!
//! DT_NEEDED is followed through RUNPATH/RPATH (with `$ORIGIN`), ld.so.conf and the default
//! directories by `lddtree`; libraries TensorFlow dlopen()s come from the declared manifest
//! `dlopen.json`, resolved in the given directories and closed over in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImageError;

/// Where the worker lies in the image.
pub const WORKER_PATH: &str = "/usr/bin/tfsandbox-worker";
/// The one folder every library of the closure lies in; the loader is told exactly this path.
pub const LIBRARY_DIR: &str = "/usr/lib/tfsandbox";

const MANIFEST: &str = include_str!("dlopen.json");

/// Which libraries beyond DT_NEEDED an image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    Cpu,
    Cuda,
}

#[derive(Deserialize)]
struct Manifest {
    cpu: Vec<String>,
    cuda: Vec<String>,
}

/// The libraries `variant` needs loaded by name at run time.
pub fn dlopen_manifest(variant: Variant) -> Vec<String> {
    let manifest: Manifest = serde_json::from_str(MANIFEST).expect("dlopen.json is valid");
    match variant {
        Variant::Cpu => manifest.cpu,
        Variant::Cuda => manifest.cuda,
    }
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
}

impl Closure {
    /// Resolves the closure of `worker`; `dlopen_dirs` are searched for the manifest's libraries.
    pub fn resolve(
        worker: &Path,
        variant: Variant,
        dlopen_dirs: &[PathBuf],
    ) -> Result<Closure, ImageError> {
        let worker = worker
            .canonicalize()
            .map_err(|e| ImageError::Closure(format!("worker {}: {e}", worker.display())))?;
        let mut needed_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();

        let tree = analyze(&worker, dlopen_dirs)?;
        let interpreter = tree.interpreter.clone().ok_or_else(|| {
            ImageError::Closure(format!(
                "{} has no program interpreter (is it static?)",
                worker.display()
            ))
        })?;
        let interpreter_name = file_name(Path::new(&interpreter));
        add_tree(&tree, "the worker", &mut needed_by, &mut found)?;

        for name in dlopen_manifest(variant) {
            let path = dlopen_dirs
                .iter()
                .chain(
                    found
                        .values()
                        .filter_map(|p| p.parent().map(Path::to_path_buf))
                        .collect::<Vec<_>>()
                        .iter(),
                )
                .map(|dir| dir.join(&name))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    ImageError::Closure(format!(
                        "{name} (loaded with dlopen() by TensorFlow) not found in: {}",
                        dlopen_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            needed_by
                .entry(name.clone())
                .or_default()
                .insert("dlopen() manifest".into());
            found.insert(name.clone(), real(&path)?);
            add_tree(
                &analyze(&path, dlopen_dirs)?,
                &name,
                &mut needed_by,
                &mut found,
            )?;
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
            let path = real(Path::new(&interpreter))?;
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
        })
    }

    /// The entry point: the loader, told exactly where the closure's libraries are.
    ///
    /// Spelled out instead of relying on an ld.so.cache or the worker's RUNPATH (which names a
    /// build-machine folder): nothing is guessed, and the image needs no ldconfig.
    pub fn entrypoint(&self) -> Vec<String> {
        vec![
            self.interpreter.clone(),
            "--library-path".into(),
            LIBRARY_DIR.into(),
            WORKER_PATH.into(),
        ]
    }

    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

fn analyze(path: &Path, extra_dirs: &[PathBuf]) -> Result<lddtree::DependencyTree, ImageError> {
    lddtree::DependencyAnalyzer::new(PathBuf::from("/"))
        .library_paths(extra_dirs.to_vec())
        .analyze(path)
        .map_err(|e| ImageError::Closure(format!("reading {}: {e}", path.display())))
}

fn add_tree(
    tree: &lddtree::DependencyTree,
    root: &str,
    needed_by: &mut BTreeMap<String, BTreeSet<String>>,
    found: &mut BTreeMap<String, PathBuf>,
) -> Result<(), ImageError> {
    for name in &tree.needed {
        needed_by
            .entry(name.clone())
            .or_default()
            .insert(root.to_string());
    }
    for (name, library) in &tree.libraries {
        for dep in &library.needed {
            needed_by
                .entry(dep.clone())
                .or_default()
                .insert(name.clone());
        }
        let path = library.realpath.clone().ok_or_else(|| {
            let by = needed_by
                .get(name)
                .map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            ImageError::Closure(format!(
                "{name} (needed by {by}) was not found where the loader would look"
            ))
        })?;
        found.insert(name.clone(), path);
    }
    Ok(())
}

fn entry(image_path: String, host_path: &Path, reason: String) -> Result<Entry, ImageError> {
    let size = std::fs::metadata(host_path)
        .map_err(|e| ImageError::Closure(format!("{}: {e}", host_path.display())))?
        .len();
    Ok(Entry {
        image_path,
        host_path: host_path.to_path_buf(),
        reason,
        size,
    })
}

fn real(path: &Path) -> Result<PathBuf, ImageError> {
    path.canonicalize()
        .map_err(|e| ImageError::Closure(format!("{}: {e}", path.display())))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
