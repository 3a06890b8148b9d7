// Records where libtensorflow lies as the RUNPATH of the binary and its test binaries, so they
// start without LD_LIBRARY_PATH.
// The image builder and Nix place the libraries themselves; this serves `cargo run` and the tests.
fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Ok(libdir) = pkg_config::get_variable("tensorflow", "libdir") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    }
}
