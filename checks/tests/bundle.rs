//! A worker laid out as in the release bundle (scripts/release.sh): `PREFIX/bin/tfsandbox-worker`
//! beside `PREFIX/lib/tfsandbox`, which holds its closure and loader. Its closure is then the
//! bundle's own files, and a sandbox runs on them.

use std::path::{Path, PathBuf};

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
