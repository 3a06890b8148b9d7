# The worker image, made by Nix: exactly the worker's Nix closure, plus nobody in /etc/passwd
# (dockerTools.fakeNss), empty /tmp and /models; no shell, no package manager. Settings come from
# nix/image-config.nix.
#
# dockerTools.streamLayeredImage rather than nix2container: it is part of the pinned nixpkgs (no
# third input to lock), it puts the popular store paths in layers of their own, its output is
# deterministic (fixed mtimes and `created`, sorted entries), and it stores only a small script
# that streams the archive: the libraries are hundreds of MB, which a built tarball would copy
# into the store once more. nix2container's strength, pushing layers to a registry without an
# archive, serves no purpose here: tfsandbox loads its images into the local engine, no registry.
{
  lib,
  dockerTools,
  worker,
  variant,
}:
let
  cfg = import ./image-config.nix;
in
dockerTools.streamLayeredImage {
  name = "tfsandbox-worker";
  # No tag given: the tag is the hash of the image's inputs.
  contents = [ dockerTools.fakeNss ];
  extraCommands =
    lib.concatMapStrings (dir: ''
      mkdir -m ${dir.mode} ${dir.path}
    '') cfg.emptyDirs
    + lib.optionalString (variant == "cuda") ''
      mkdir -p ${builtins.dirOf cfg.driverLink.path}
      ln -s ${cfg.driverLink.target} ${cfg.driverLink.path}
    '';
  config = cfg.config {
    workerExe = lib.getExe worker;
    inherit variant;
  };
  created = "1970-01-01T00:00:01Z";
  passthru = {
    inherit worker variant;
  };
}
