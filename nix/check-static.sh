#!/usr/bin/env bash
# Checks the Nix build as far as a machine that cannot fetch nixpkgs can (CI runs it from .ci/run):
#   1. every .nix file parses;
#   2. flake.lock is JSON, locks every input of flake.nix at a rev with its narHash, and Nix itself
#      accepts it for flake.nix without relocking (offline);
#   3. what needs no nixpkgs evaluates (--strict): the image settings, the dlopen() manifest shared
#      with the non-Nix image builder, the libtensorflow pin, the nextest filter, with the
#      assertions of nix/tests/static.nix;
#   4. the Nix build and the non-Nix build agree: same libtensorflow wheel and version as
#      scripts/setup-libtensorflow.sh; the tests nix/nextest.nix leaves out exist.
# It builds nothing: `nix build` and `nix flake check` need nixpkgs (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nix-bin >/dev/null
fi
# Debian's nix (2.8 on bookworm) keeps `nix hash` and `nix flake` behind experimental features.
nix_() { nix --extra-experimental-features 'nix-command flakes' "$@"; }
echo "== $(nix --version)"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

echo "== 1. every .nix file parses"
for required in flake.nix flake.lock nix/default.nix nix/source.nix nix/worker.nix nix/image.nix \
  nix/libtensorflow.nix nix/libtensorflow-pin.nix nix/checks.nix nix/image-config.nix \
  nix/dlopen.nix nix/nextest.nix nix/vm.nix nix/tests/static.nix; do
  [ -f "$required" ] || fail "$required is missing"
done
mapfile -t nix_files < <(find . \( -path ./target -o -path ./.cache -o -path ./.git \) -prune -o \
  -name '*.nix' -type f -print | sort)
for file in "${nix_files[@]}"; do
  nix-instantiate --parse "$file" >/dev/null || fail "$file does not parse"
  echo "parsed $file"
done

echo "== 2. flake.lock"
nix-instantiate --eval --strict -E 'builtins.fromJSON (builtins.readFile ./flake.lock)' >/dev/null \
  || fail "flake.lock is not JSON"
echo "flake.lock is JSON"
# Nix reads flake.nix and flake.lock and would relock (and so fail offline) if they disagreed.
# From a copy: a path: flake in the checkout would copy target/ into the store.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/flake/host/lib/src"
cp -r flake.nix flake.lock nix "$scratch/flake/"
cp host/lib/src/dlopen.json "$scratch/flake/host/lib/src/"
nix_ flake metadata --offline --no-write-lock-file --json "path:$scratch/flake" >/dev/null \
  || fail "nix does not accept flake.lock for flake.nix (it would relock)"
cmp -s flake.lock "$scratch/flake/flake.lock" || fail "nix rewrote flake.lock"
echo "nix accepts flake.lock for flake.nix as it is (offline, no relocking)"

echo "== 3. what evaluates without nixpkgs"
for file in nix/image-config.nix nix/dlopen.nix nix/libtensorflow-pin.nix nix/nextest.nix; do
  nix-instantiate --eval --strict "$file" >/dev/null || fail "$file does not evaluate"
  echo "evaluated $file"
done
echo "CUDA dlopen() libraries, from host/lib/src/dlopen.json:"
nix-instantiate --eval --strict -E '(import ./nix/dlopen.nix).cuda'
echo "image config (for a worker at /nix/store/...-worker/bin/tfsandbox-worker):"
nix-instantiate --eval --strict -E \
  '(import ./nix/image-config.nix).config { workerExe = "/nix/store/...-worker/bin/tfsandbox-worker"; variant = "cpu"; }'
echo "nix/tests/static.nix:"
nix-instantiate --eval --strict nix/tests/static.nix

echo "== 4. the Nix build agrees with the non-Nix one"
script_version=$(sed -n 's/^TF_VERSION=//p' scripts/setup-libtensorflow.sh)
script_sha256=$(sed -n 's/^WHEEL_SHA256=//p' scripts/setup-libtensorflow.sh)
pin_version=$(nix_ eval --raw --file nix/libtensorflow-pin.nix version)
pin_sha256=$(nix_ hash to-base16 "$(nix_ eval --raw --file nix/libtensorflow-pin.nix cpu.hash)")
[ "$pin_version" = "$script_version" ] \
  || fail "nix/libtensorflow-pin.nix has TensorFlow $pin_version, scripts/setup-libtensorflow.sh $script_version"
[ "$pin_sha256" = "$script_sha256" ] \
  || fail "the CPU wheel's sha256 differs: nix $pin_sha256, scripts/setup-libtensorflow.sh $script_sha256"
echo "libtensorflow $pin_version, wheel sha256 $pin_sha256 in both"

mapfile -t excluded < <(nix-instantiate --eval --strict --json \
  -E 'map (e: e.filter) (import ./nix/nextest.nix).excluded' | tr -d '[]"' | tr ',' '\n')
for filter in "${excluded[@]}"; do
  case "$filter" in
    "test(="*")")
      name=${filter#test(=}
      name=${name%)}
      grep -q "fn $name(" checks/tests/*.rs || fail "nix/nextest.nix leaves out $name, which no suite has"
      ;;
    "binary_id(tfsandbox-checks::"*")")
      name=${filter#binary_id(tfsandbox-checks::}
      name=${name%)}
      [ -f "checks/tests/$name.rs" ] || fail "nix/nextest.nix leaves out checks/tests/$name.rs, which does not exist"
      ;;
    "(binary_id(tfsandbox-checks::"*") and test(="*"))")
      name=${filter#*binary_id(tfsandbox-checks::}
      name=${name%%)*}
      test_name=${filter#*test(=}
      test_name=${test_name%%)*}
      grep -q "fn $test_name(" "checks/tests/$name.rs" \
        || fail "nix/nextest.nix leaves out $test_name of checks/tests/$name.rs, which has none"
      ;;
    "test(/^docker::/)")
      grep -q 'mod docker' checks/src/lib.rs || fail "each_runtime! has no docker module any more"
      ;;
    "test(/^gvisor::/)")
      grep -q 'mod gvisor' checks/src/lib.rs || fail "each_runtime! has no gvisor module any more"
      ;;
    *) fail "nix/nextest.nix: $filter is not checked here" ;;
  esac
  echo "nextest leaves out $filter"
done

echo "== nix/check-static.sh: all passed (nothing was built: that needs nixpkgs)"
