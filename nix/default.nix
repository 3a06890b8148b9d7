# Everything the flake offers for one system; flake.nix maps it over the systems.
{
  nixpkgs,
  crane,
  system,
}:
let
  pkgs = nixpkgs.legacyPackages.${system};
  # CUDA is unfree, and `cudaSupport` is a nixpkgs-wide setting: the CUDA variant gets an
  # instance of its own. Nothing in the Rust build reads either setting, so the toolchain and
  # the crates build the same in both.
  pkgsCuda = import nixpkgs {
    inherit system;
    config = {
      allowUnfree = true;
      cudaSupport = true;
    };
  };
  inherit (pkgs) lib;

  src = import ./source.nix {
    inherit lib;
    craneLib = crane.mkLib pkgs;
  };

  variant =
    name: variantPkgs:
    let
      craneLib = crane.mkLib variantPkgs;
      libtensorflow = variantPkgs.callPackage ./libtensorflow.nix {
        cudaSupport = name == "cuda";
        # CUDA 12: the sonames TensorFlow 2.18 loads (host/lib/src/dlopen.json).
        cudaPackages = variantPkgs.cudaPackages_12;
      };
      workspace = variantPkgs.callPackage ./worker.nix { inherit craneLib libtensorflow src; };
      image = variantPkgs.callPackage ./image.nix {
        inherit (workspace) worker;
        variant = name;
      };
    in
    {
      inherit
        craneLib
        libtensorflow
        workspace
        image
        ;
    };

  cpu = variant "cpu" pkgs;
  cuda = variant "cuda" pkgsCuda;

  # The README's demo: a real SavedModel answered from the sandbox.
  halfPlusTwo = lib.fileset.toSource {
    root = ../checks/fixtures;
    fileset = ../checks/fixtures/half_plus_two;
  };
  demo = pkgs.writeShellApplication {
    name = "tfsandbox-demo";
    runtimeInputs = [ cpu.workspace.cli ];
    text = ''
      exec tfsandbox run --model ${halfPlusTwo}/half_plus_two --input 'x=[[1.0],[2.0],[5.0]]' "$@"
    '';
  };
in
{
  packages = {
    default = cpu.workspace.cli;
    tfsandbox = cpu.workspace.cli;
    worker = cpu.workspace.worker;
    image = cpu.image;
    image-cuda = cuda.image;
    worker-cuda = cuda.workspace.worker;
    libtensorflow = cpu.libtensorflow;
    libtensorflow-cuda = cuda.libtensorflow;
  };

  apps = {
    demo = {
      type = "app";
      program = lib.getExe demo;
      meta.description = "tfsandbox run on the half_plus_two fixture; prints {\"y\":[[2.5],[3.0],[4.5]]}";
    };
  };

  checks =
    {
      inherit (cpu.workspace) worker;
      tfsandbox = cpu.workspace.cli;
    }
    // import ./checks.nix {
      inherit lib pkgs src;
      inherit (cpu) craneLib workspace;
      images = {
        cpu = cpu.image;
        cuda = cuda.image;
      };
    }
    // {
      # The process runtime's suites in a NixOS VM (needs KVM): nix/vm.nix.
      vm = import ./vm.nix {
        inherit lib pkgs;
        inherit (cpu) craneLib workspace;
      };
    };

  devShells.default = cpu.craneLib.devShell {
    # pkg-config, libtensorflow (tensorflow.pc on PKG_CONFIG_PATH), openssl, zlib.
    inputsFrom = [ cpu.workspace.worker ];
    packages = [ pkgs.cargo-nextest ];
  };
}
