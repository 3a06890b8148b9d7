#!/usr/bin/env bash
# Rehearses the Nix build's test run (checks.nextest) on a machine that cannot fetch nixpkgs, so a
# test that would fail in the Nix build sandbox fails here first (CI runs it from .ci/run, after
# scripts/test.sh has built the workspace):
#   1. flake.lock as `nix flake lock` writes it (nix/tests/static.nix: every rev a commit);
#   2. exactly the tests checks.nextest runs: the filter is read from nix/nextest.nix by Nix;
#   3. in the environment the Nix build sandbox gives: no Docker socket, no docker or runsc on
#      PATH, no cgroup filesystem, HOME=/homeless-shelter, no network but loopback, nothing of
#      .cache but the libtensorflow the derivation provides, an empty environment otherwise (but
#      nix/nextest.nix's environment);
#   4. with the worker's program interpreter off /lib64 (patchelf --set-interpreter to a copy of
#      the loader in another folder), as a Nix-built worker names glibc's loader in /nix/store.
#
#   nix/rehearse-check.sh [FILTER]   # FILTER (a nextest filter) narrows the run to the tests of
#                                    # checks.nextest that it also matches, e.g. one suite
# Not rehearsed: Nix's own user namespace (the tests run as root here) and the release profile
# (checks.nextest builds with --profile release; this reuses the dev build CI already has).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
scratch=$repo/target/nix-rehearsal

# The part that runs inside new mount and network namespaces (see the end of this file).
inside() {
  ip link set lo up
  # No engine: its sockets become /dev/null (a client gets ENOTSOCK/ECONNREFUSED, as with none).
  for socket in /var/run/docker.sock /run/containerd/containerd.sock; do
    if [ -S "$socket" ]; then mount --bind /dev/null "$socket"; fi
  done
  # .cache holds only libtensorflow. It may be a link into another checkout: bind libtensorflow
  # aside first, since the tmpfs hides whatever .cache points to.
  mkdir -p "$scratch/libtensorflow"
  mount --bind "$(readlink -f .cache/libtensorflow)" "$scratch/libtensorflow"
  mount -t tmpfs tmpfs "$(readlink -f .cache)"
  mkdir .cache/libtensorflow
  mount --bind "$scratch/libtensorflow" .cache/libtensorflow
  # The worker the suites find beside them, its interpreter moved; the build's own file is
  # untouched outside this namespace.
  mount --bind "$scratch/tfsandbox-worker" target/debug/tfsandbox-worker
  # The docker image's init too: one toolchain, one loader, as under Nix.
  mount --bind "$scratch/tfsandbox-init" target/debug/tfsandbox-init
  # No cgroup filesystem, as in the Nix build sandbox.
  if mountpoint -q /sys/fs/cgroup; then umount -l /sys/fs/cgroup; fi

  exec env -i TFSANDBOX_ALLOW_WEAKER="$allow_weaker" HOME=/homeless-shelter PATH="$sandbox_path" TMPDIR="$scratch/build" \
    CARGO_HOME="$cargo_home" RUSTUP_HOME="$rustup_home" CARGO_NET_OFFLINE=true \
    REHEARSAL_EXPRESSION="$expression" REHEARSAL_NO_TESTS="$no_tests" REHEARSAL_BINARIES="$scratch/binaries.json" \
    REHEARSAL_METADATA="$scratch/metadata.json" bash -euo pipefail -c '
      for hidden in docker runsc; do
        if command -v "$hidden" >/dev/null; then echo "FAIL: $hidden is on PATH" >&2; exit 1; fi
      done
      [ ! -S /var/run/docker.sock ] || { echo "FAIL: the Docker socket is there" >&2; exit 1; }
      [ ! -e "$HOME" ] || { echo "FAIL: $HOME exists" >&2; exit 1; }
      [ "$(ls .cache)" = libtensorflow ] || { echo "FAIL: .cache holds $(ls .cache)" >&2; exit 1; }
      # The build of step 3, reused: cargo itself would relink target/debug/tfsandbox-worker.
      cargo nextest run --no-fail-fast --binaries-metadata "$REHEARSAL_BINARIES" \
        --cargo-metadata "$REHEARSAL_METADATA" -E "$REHEARSAL_EXPRESSION" $REHEARSAL_NO_TESTS
    '
}

if [ "${1:-}" = --inside ]; then
  inside
fi
narrow=${1:-}

if ! command -v nix-instantiate >/dev/null || ! command -v patchelf >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nix-bin patchelf >/dev/null
fi
nix_() { nix --extra-experimental-features nix-command "$@"; }

echo "== 1. flake.lock: every input locked at a commit"
nix-instantiate --eval --strict nix/tests/static.nix >/dev/null
echo "nix/tests/static.nix evaluates"

echo "== 2. the tests checks.nextest runs"
expression=$(nix_ eval --raw --file nix/nextest.nix expression)
echo "filter: $expression"
allow_weaker=$(nix_ eval --raw --file nix/nextest.nix environment.TFSANDBOX_ALLOW_WEAKER)
# A narrowed run may match nothing (a suite checks.nextest leaves out): that is no failure.
no_tests=
if [ -n "$narrow" ]; then
  expression="($expression) and ($narrow)"
  no_tests=--no-tests=warn
  echo "narrowed to: $narrow"
fi

echo "== 3. the build (the dev profile CI has built; a no-op after scripts/test.sh)"
cargo build --workspace --bins --tests

echo "== 4. the worker's interpreter off /lib64"
rm -rf "$scratch"
mkdir -p "$scratch/glibc/lib" "$scratch/build"
loader=$(patchelf --print-interpreter target/debug/tfsandbox-worker)
cp -L "$loader" "$scratch/glibc/lib/"
cp target/debug/tfsandbox-worker "$scratch/tfsandbox-worker"
patchelf --set-interpreter "$scratch/glibc/lib/$(basename "$loader")" "$scratch/tfsandbox-worker"
cp target/debug/tfsandbox-init "$scratch/tfsandbox-init"
patchelf --set-interpreter "$scratch/glibc/lib/$(basename "$loader")" "$scratch/tfsandbox-init"
echo "interpreter: $(patchelf --print-interpreter "$scratch/tfsandbox-worker") (was $loader)"
cargo nextest list --workspace --list-type binaries-only --message-format json >"$scratch/binaries.json"
cargo metadata --format-version 1 --locked >"$scratch/metadata.json"

echo "== 5. the suites, in a rehearsed Nix build sandbox"
# PATH without docker and runsc: a folder that holds either is replaced by a copy of its links
# without them.
hide=(docker dockerd runsc containerd)
sandbox_path=
index=0
IFS=: read -r -a path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  [ -d "$dir" ] || continue
  holds=
  for name in "${hide[@]}"; do [ -e "$dir/$name" ] && holds=1; done
  if [ -n "$holds" ]; then
    index=$((index + 1))
    shadow=$scratch/path/$index
    mkdir -p "$shadow"
    for file in "$dir"/*; do
      name=$(basename "$file")
      case " ${hide[*]} " in *" $name "*) continue ;; esac
      ln -s "$file" "$shadow/$name"
    done
    dir=$shadow
  fi
  sandbox_path=${sandbox_path:+$sandbox_path:}$dir
done
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
export scratch sandbox_path cargo_home rustup_home expression no_tests allow_weaker
unshare --mount --net --propagation private -- "$repo/nix/rehearse-check.sh" --inside
echo "== nix/rehearse-check.sh: passed"
