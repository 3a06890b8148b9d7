// The in-process baseline links libtensorflow: its folder becomes the RUNPATH, as for the worker.
fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if let Ok(libdir) = pkg_config::get_variable("tensorflow", "libdir") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{libdir}");
    }
}
