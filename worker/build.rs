// Records where libtensorflow lies as the RUNPATH of the binary and its test binaries, so they
// start without LD_LIBRARY_PATH.
// The image builder and Nix place the libraries themselves; this serves `cargo run` and the tests.
// TFSANDBOX_WORKER_RUNPATH, when set, is recorded instead: scripts/release.sh names the bundle's
// own folder, so no path of the build machine ends up in the worker.
fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=TFSANDBOX_WORKER_RUNPATH");
    let runpath = std::env::var("TFSANDBOX_WORKER_RUNPATH")
        .ok()
        .or_else(|| pkg_config::get_variable("tensorflow", "libdir").ok());
    if let Some(runpath) = runpath {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{runpath}");
    }
}
