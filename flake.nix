{
  description = "tfsandbox: run untrusted TensorFlow SavedModels in a sandboxed worker";

  inputs = {
    # A release branch (binary cache, stable toolchain); crane v0.23.4 is tested against 25.11.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    # crane has no inputs of its own, so nothing of it can follow nixpkgs.
    crane.url = "github:ipetkov/crane/v0.23.4";
  };

  outputs =
    { nixpkgs, crane, ... }:
    let
      # x86_64 only: the libtensorflow wheels and the CUDA libraries are x86_64 builds.
      systems = [ "x86_64-linux" ];
      perSystem = nixpkgs.lib.genAttrs systems (system: import ./nix { inherit nixpkgs crane system; });
      each = output: nixpkgs.lib.mapAttrs (_: outputs: outputs.${output}) perSystem;
    in
    {
      packages = each "packages";
      apps = each "apps";
      checks = each "checks";
      devShells = each "devShells";
    };
}
