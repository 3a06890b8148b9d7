# checks.vm: the test run of checks.nextest (the process runtime's suites with it) inside a NixOS
# VM, where the jailer gets the user namespaces, mounts and Landlock that Nix's build sandbox does
# not give. Written against the pinned nixpkgs (testers.runNixOSTest, nixos/lib/testing,
# qemu-vm.nix); never built here (no nixpkgs): see the README's "What has run where".
{
  lib,
  pkgs,
  craneLib,
  workspace,
}:
let
  nextest = import ./nextest.nix;
  inherit (workspace) commonArgs cargoArtifacts;

  # The suites, built as checks.nextest builds them (release profile, the workspace's binaries
  # beside the tests), with what running them elsewhere takes: the source (the suites find their
  # fixtures and scratch folder at the build folder's path, compiled in), nextest's lists of
  # binaries and of the workspace, and that path. Not archived: Nix sees the references of the
  # plain files (libtensorflow, glibc) and puts them in the VM's store.
  suites = craneLib.mkCargoDerivation (
    commonArgs
    // {
      inherit cargoArtifacts;
      pname = "tfsandbox-suites";
      doInstallCargoArtifacts = false;
      nativeBuildInputs = commonArgs.nativeBuildInputs ++ [
        pkgs.cargo-nextest
        pkgs.jq
      ];
      buildPhaseCargoCommand = ''
        cargo build --profile release --locked --workspace --bins --tests
        cargo nextest list --cargo-profile release --workspace --list-type binaries-only \
          --message-format json > binaries.json
        cargo metadata --format-version 1 --locked --offline > metadata.json
      '';
      installPhaseCommand = ''
        mkdir -p $out/tree
        pwd > $out/build-dir
        tar -cf - --exclude=./target --exclude=./.cargo-home . | tar -C $out/tree -xf -
        mkdir -p $out/tree/target/release/deps
        find target/release -maxdepth 1 -type f -executable -exec cp {} $out/tree/target/release/ \;
        for binary in $(jq -r '."rust-binaries"[]."binary-path"' binaries.json); do
          cp "$binary" "$out/tree/''${binary#$PWD/}"
        done
      '';
    }
  );

  # Inside the VM: the tree back at the build folder's path (writable: the suites write into
  # target/tmp), then exactly the tests checks.nextest runs.
  runSuites = pkgs.writeShellScript "tfsandbox-vm-suites" ''
    set -euo pipefail
    export PATH=${
      lib.makeBinPath [
        pkgs.cargo
        pkgs.cargo-nextest
        pkgs.rustc
        pkgs.gcc
        pkgs.patchelf
        pkgs.coreutils
      ]
    }:$PATH
    build_dir=$(cat ${suites}/build-dir)
    mkdir -p "$build_dir"
    cp -r ${suites}/tree/. "$build_dir/"
    chmod -R u+w "$build_dir"
    mkdir -p "$build_dir/target/tmp"
    cd "$build_dir"
    grep -qw landlock /sys/kernel/security/lsm || { echo "Landlock is not active" >&2; exit 1; }
    cargo nextest run --no-fail-fast --binaries-metadata binaries.json \
      --cargo-metadata metadata.json -E ${lib.escapeShellArg nextest.expression}
  '';
in
pkgs.testers.runNixOSTest {
  name = "tfsandbox-process-suites";
  nodes.machine = {
    # The suites start several workers at once, each mapping libtensorflow (about 700 MB).
    virtualisation.memorySize = 8192;
    virtualisation.cores = 4;
    # The copy of the suites' tree at the build folder's path.
    virtualisation.diskSize = 16384;
    virtualisation.additionalPaths = [ suites ];
  };
  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("${runSuites} >&2")
  '';
}
