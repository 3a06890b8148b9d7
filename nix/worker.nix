# The Rust workspace, built with crane: every dependency once (buildDepsOnly), then the worker and
# the tfsandbox command from those artifacts. Rust crates link statically; libtensorflow and glibc
# are found through the RUNPATHs Nix's linker wrapper (and worker/build.rs) record. No
# LD_LIBRARY_PATH anywhere.
{
  lib,
  craneLib,
  pkg-config,
  openssl,
  zlib,
  libtensorflow,
  src,
}:
let
  commonArgs = {
    inherit src;
    pname = "tfsandbox-workspace";
    inherit ((lib.importTOML ../Cargo.toml).workspace.package) version;
    strictDeps = true;
    nativeBuildInputs = [ pkg-config ];
    buildInputs = [
      # tensorflow-sys finds it with `pkg-config tensorflow` (the .pc is in its dev output). Nix
      # sets PKG_CONFIG_PATH, and .cargo/config.toml only sets it when it is unset.
      libtensorflow
      # Only for tensorflow-sys' build script (curl -> openssl-sys, libz-sys), which links them
      # but never downloads anything once pkg-config found libtensorflow.
      openssl
      zlib
    ];
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  worker = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      pname = "tfsandbox-worker";
      cargoExtraArgs = "--locked -p tfsandbox-worker";
      # The tests run once, in checks.nextest.
      doCheck = false;
      passthru = { inherit libtensorflow; };
      meta.mainProgram = "tfsandbox-worker";
    }
  );

  # The process runtime's confinement; it holds no TensorFlow.
  jailer = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      pname = "tfsandbox-jailer";
      cargoExtraArgs = "--locked -p tfsandbox-jailer";
      doCheck = false;
      meta.mainProgram = "tfsandbox-jailer";
    }
  );

  cli = craneLib.buildPackage (
    commonArgs
    // {
      inherit cargoArtifacts;
      pname = "tfsandbox";
      cargoExtraArgs = "--locked -p tfsandbox-cli";
      doCheck = false;
      # The process runtime starts the worker it finds beside the running program
      # (host/lib/src/config.rs); current_exe() is this output's bin/tfsandbox.
      # The process runtime finds the jailer beside the worker.
      postInstall = ''
        ln -s ${lib.getExe worker} "$out/bin/tfsandbox-worker"
        ln -s ${lib.getExe jailer} "$out/bin/tfsandbox-jailer"
      '';
      passthru = { inherit worker jailer; };
      meta.mainProgram = "tfsandbox";
    }
  );
in
{
  inherit
    commonArgs
    cargoArtifacts
    worker
    jailer
    cli
    ;
}
