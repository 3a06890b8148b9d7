//! The release bundle (scripts/release.sh). Always: a worker laid out as in the bundle,
//! `PREFIX/bin/tfsandbox-worker` beside `PREFIX/lib/tfsandbox` (its closure and loader), resolves
//! its closure to the bundle's own files, and a sandbox runs on them. With `TFSANDBOX_BUNDLE`
//! naming a built archive (a release build takes minutes, so it is not built here): the archive is
//! packed as the script promises and runs the demo unpacked in another folder, environment cleared.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use tfsandbox::closure::WORKER_PATH;
use tfsandbox::closure::{Closure, Variant};
use tfsandbox::{Config, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, fixture, jailer_path};

/// A hard link where the file system allows one (the libraries are hundreds of MB), else a copy.
fn place(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

#[tokio::test]
async fn a_bundled_worker_runs_on_the_closure_beside_it() {
    let worker = config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("worker built");
    let built = Closure::resolve(&worker, Variant::Cpu, &[]).expect("the worker's closure");

    let prefix = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let prefix_path = prefix.path().canonicalize().unwrap();
    let (bin, lib) = (prefix_path.join("bin"), prefix_path.join("lib/tfsandbox"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    for entry in &built.entries {
        let name = Path::new(&entry.image_path).file_name().unwrap();
        let to = if entry.image_path == WORKER_PATH {
            bin.join(name)
        } else {
            lib.join(name)
        };
        place(&entry.host_path, &to);
    }
    place(&jailer_path(), &bin.join("tfsandbox-jailer"));

    let bundled_worker = bin.join("tfsandbox-worker");
    let bundled = Closure::resolve(&bundled_worker, Variant::Cpu, &[]).expect("bundled closure");
    let paths =
        |c: &Closure| -> Vec<String> { c.entries.iter().map(|e| e.image_path.clone()).collect() };
    assert_eq!(paths(&bundled), paths(&built), "the same files inside");
    assert_eq!(bundled.interpreter, built.interpreter);
    for entry in &bundled.entries {
        assert!(
            entry.host_path.starts_with(&prefix_path),
            "{} comes from {}, outside the bundle",
            entry.image_path,
            entry.host_path.display()
        );
    }
    let loader: PathBuf = lib.join(Path::new(&built.interpreter).file_name().unwrap());
    assert!(
        bundled
            .entries
            .iter()
            .any(|e| e.image_path == built.interpreter && e.host_path == loader),
        "the bundle's loader stands in for {}",
        built.interpreter
    );

    let sandbox = Sandbox::start(Config {
        worker_path: Some(bundled_worker),
        models: vec![fixture("half_plus_two")],
        ..config(RuntimeKind::Process)
    })
    .await
    .expect("a sandbox on the bundled worker starts");
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
}

/// The folder every entry lies in: `tfsandbox-<version>-x86_64-linux`.
const TOP: &str = concat!("tfsandbox-", env!("CARGO_PKG_VERSION"), "-x86_64-linux");

#[test]
fn a_built_bundle_is_normalised_and_runs_unpacked_with_no_environment() {
    let Some(archive) = std::env::var_os("TFSANDBOX_BUNDLE").map(PathBuf::from) else {
        eprintln!(
            "skipped: TFSANDBOX_BUNDLE names no archive (scripts/release.sh OUT_DIR builds one)"
        );
        return;
    };
    assert_eq!(
        archive.file_name().unwrap().to_string_lossy(),
        format!("{TOP}.tar.gz")
    );
    // gzip -n: no file name (FLG.FNAME) and no time in the header (RFC 1952, 2.3).
    let mut header = [0u8; 10];
    std::fs::File::open(&archive)
        .and_then(|mut f| f.read_exact(&mut header))
        .unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    assert_eq!(&header[..3], &[0x1f, 0x8b, 8], "a deflate gzip stream");
    assert_eq!(header[3] & 0x08, 0, "the gzip header names a file");
    assert_eq!(&header[4..8], &[0, 0, 0, 0], "the gzip header holds a time");
    // Streamed, twice: the bundle is hundreds of MB.
    let open = || {
        let file = std::fs::File::open(&archive).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    };

    let mut paths = Vec::new();
    let mut mtimes = std::collections::BTreeSet::new();
    let mut listing = open();
    for entry in listing.entries().expect("the archive decompresses") {
        let entry = entry.unwrap();
        let header = entry.header();
        let path = entry.path().unwrap().into_owned();
        let what = path.display().to_string();
        assert!(path.starts_with(TOP), "{what} lies outside {TOP}/");
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "{what}"
        );
        assert_eq!(
            header.username().unwrap(),
            Some(""),
            "{what} names its owner"
        );
        mtimes.insert(header.mtime().unwrap());
        let mode = header.mode().unwrap() & 0o7777;
        let executable = path.starts_with(format!("{TOP}/bin"))
            || path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ld-linux");
        match header.entry_type() {
            tar::EntryType::Directory => assert_eq!(mode, 0o755, "{what}"),
            tar::EntryType::Regular if executable => assert_eq!(mode, 0o755, "{what}"),
            tar::EntryType::Regular => assert_eq!(mode, 0o644, "{what}"),
            other => panic!("{what} is a {other:?}; the bundle holds only folders and files"),
        }
        paths.push(path);
    }
    assert_eq!(
        mtimes.len(),
        1,
        "every entry has the commit's time: {mtimes:?}"
    );
    // tar --sort=name: each folder's entries in name order, a folder before what it holds; that
    // is the order of paths compared component by component.
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "the entries are not in name order");
    for file in [
        "bin/tfsandbox",
        "bin/tfsandbox-jailer",
        "bin/tfsandbox-init",
        "bin/tfsandbox-worker",
        "lib/tfsandbox/ld-linux-x86-64.so.2",
        "lib/tfsandbox/libtensorflow_cc.so.2",
        "lib/tfsandbox/libtensorflow_framework.so.2",
        "lib/tfsandbox/libc.so.6",
        "README.txt",
    ] {
        assert!(
            paths.contains(&Path::new(TOP).join(file)),
            "the bundle lacks {file}"
        );
    }

    // Unpacked elsewhere and run with a cleared environment from yet another folder.
    let unpacked = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    open().unpack(unpacked.path()).unwrap();
    let prefix = unpacked.path().canonicalize().unwrap().join(TOP);
    let tfsandbox = prefix.join("bin/tfsandbox");
    let run = |args: &[&str]| {
        let output = Command::new("env")
            .arg("-i")
            .arg(&tfsandbox)
            .args(args)
            .current_dir(std::env::temp_dir())
            .output()
            .expect("env runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "tfsandbox {args:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    let closure = run(&["image", "closure"]);
    let files: Vec<&str> = closure
        .lines()
        .filter_map(|l| l.split("  <- ").nth(1))
        .collect();
    assert!(!files.is_empty(), "no closure listed: {closure}");
    for file in files {
        assert!(
            Path::new(file).starts_with(&prefix),
            "the unpacked bundle's closure takes {file} from outside it"
        );
    }
    let model = fixture("half_plus_two");
    let demo = run(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--input",
        "x=[[1.0],[2.0],[5.0]]",
    ]);
    assert_eq!(demo.trim(), r#"{"y":[[2.5],[3.0],[4.5]]}"#);
}
