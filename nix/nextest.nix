# What the Nix test run (checks.nextest) leaves out, and why. Plain data: nix/check-static.sh
# evaluates it and checks that every test named here exists.
rec {
  excluded = [
    {
      filter = "binary_id(tfsandbox-checks::docker)";
      why = "needs a Docker engine; the Nix build sandbox has none";
    }
    {
      filter = "binary_id(tfsandbox-checks::serve)";
      why = "installs TensorFlow Serving's Python client from PyPI; the Nix build sandbox has no network";
    }
    {
      filter = "test(/^docker::/)";
      why = "the docker half of every each_runtime! suite: needs a Docker engine";
    }
    {
      # A top-level fn of its own, not an each_runtime! module, so test(/^docker::/) misses it.
      filter = "(binary_id(tfsandbox-checks::escape) and test(=docker))";
      why = "the escape suite's docker test: needs a Docker engine";
    }
    {
      # Like the docker one: a top-level fn, which test(/^gvisor::/) misses.
      filter = "(binary_id(tfsandbox-checks::escape) and test(=gvisor))";
      why = "the escape suite's gvisor test: needs runsc, which the Nix build sandbox does not have";
    }
    {
      filter = "binary_id(tfsandbox-checks::docker_lifetime)";
      why = "SIGKILLs a host of a docker sandbox: needs a Docker engine";
    }
    {
      filter = "binary_id(tfsandbox-checks::gvisor)";
      why = "the gvisor suite: needs runsc, which the Nix build sandbox does not have";
    }
    {
      filter = "binary_id(tfsandbox-checks::cuda)";
      why = "resolves the CUDA closure from .cache/libtensorflow-cuda/lib, which the flake's source does not hold";
    }
    {
      filter = "test(/^gvisor::/)";
      why = "the gvisor half of every each_runtime! suite: needs runsc, which the Nix build sandbox does not have";
    }
    {
      filter = "binary_id(tfsandbox-checks::tenancy)";
      why = "checks each process sandbox's cgroup and a host without one (unshare, umount): the Nix build sandbox mounts no cgroup filesystem";
    }
    {
      filter = "test(=a_worker_that_exits_at_start_is_reported_with_its_status)";
      why = "starts /bin/false, which the Nix build sandbox does not have";
    }
    {
      filter = "test(=a_worker_that_speaks_no_protocol_fails_the_start_without_hanging)";
      why = "starts /bin/cat, which the Nix build sandbox does not have";
    }
  ];
  # The environment the suites run in. The Nix build sandbox mounts no cgroup filesystem, so the
  # process runtime, which fails closed without a cgroup of its own, is allowed to run without.
  environment = {
    TFSANDBOX_ALLOW_WEAKER = "cgroup";
  };
  expression = "not (${builtins.concatStringsSep " or " (map (e: e.filter) excluded)})";
}
