# The worker image's settings as plain data. Nothing here needs nixpkgs, so nix/check-static.sh
# evaluates this file on machines that cannot fetch nixpkgs; nix/image.nix builds the image from it
# and nix/checks.nix checks the built image against it.
rec {
  # Numeric, so it holds whatever /etc/passwd says; dockerTools.fakeNss names 65534 nobody.
  user = "65534:65534";

  # Empty folders: /tmp (the docker runtime mounts a tmpfs over it) and /models (one read-only
  # bind mount per model folder). Nothing in the image is written at run time.
  emptyDirs = [
    {
      path = "tmp";
      mode = "1777";
    }
    {
      path = "models";
      mode = "0755";
    }
  ];

  # CUDA variant only. The NVIDIA container toolkit (libnvidia-container, `docker run --gpus`)
  # mounts the driver's libraries (libcuda.so.1, ...) into /usr/lib64 of an image that has no
  # /etc/debian_version, and runs ldconfig there; but nixpkgs' glibc never reads /etc/ld.so.cache.
  # nixpkgs' convention is a RUNPATH entry /run/opengl-driver/lib (addDriverRunpath), which
  # nix/libtensorflow.nix gives libtensorflow; the image points that folder at /usr/lib64.
  driverLink = {
    path = "run/opengl-driver/lib";
    target = "/usr/lib64";
    runpath = "/run/opengl-driver/lib";
  };

  # Everything the image holds outside /nix/store (paths without the leading slash). `required`
  # must all be there; nothing outside `allowed` may be. /etc and /var come from dockerTools.fakeNss.
  entries = rec {
    cpu = rec {
      required = [
        "etc"
        "etc/group"
        "etc/passwd"
        "models"
        "tmp"
      ];
      allowed = required ++ [
        "etc/nsswitch.conf"
        "var"
        "var/empty"
      ];
    };
    cuda = {
      required = cpu.required ++ [
        "run"
        "run/opengl-driver"
        driverLink.path
      ];
      allowed = cpu.allowed ++ [
        "run"
        "run/opengl-driver"
        driverLink.path
      ];
    };
  };

  # No file or link of these names may be anywhere in the image.
  shells = [
    "sh"
    "bash"
    "dash"
    "ash"
    "zsh"
    "ksh"
    "mksh"
    "csh"
    "tcsh"
    "fish"
    "busybox"
    "toybox"
  ];

  # The only DT_NEEDED entries the worker may have: libtensorflow, glibc and libgcc_s. Every Rust
  # crate is linked in statically; anything else here (libssl, libz, ...) fails checks.worker-links.
  allowedNeeded = [
    "libtensorflow_cc.so.2"
    "libtensorflow_framework.so.2"
    "libgcc_s.so.1"
    "libc.so.6"
    "libm.so.6"
    "libpthread.so.0"
    "libdl.so.2"
    "librt.so.1"
    "libutil.so.1"
    "ld-linux-x86-64.so.2"
  ];

  # The image config (OCI/Docker `config`). No Env at all: in particular no LD_LIBRARY_PATH; the
  # worker finds every library through RUNPATHs into /nix/store.
  config =
    { workerExe, variant }:
    {
      User = user;
      Entrypoint = [ workerExe ];
      WorkingDir = "/";
      Labels = {
        "org.opencontainers.image.title" = "tfsandbox-worker";
        "org.opencontainers.image.description" = "tfsandbox worker (${variant}), built by nix/image.nix";
      };
    };
}
