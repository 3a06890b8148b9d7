#!/usr/bin/env bash
# Builds the release bundle for people without Nix:
#   scripts/release.sh OUT_DIR  ->  OUT_DIR/tfsandbox-<version>-x86_64-linux.tar.gz
# holding bin/tfsandbox, bin/tfsandbox-jailer, bin/tfsandbox-init (the docker runtime's pid 1),
# bin/tfsandbox-worker and the worker's exact closure, its loader included, in lib/tfsandbox: the
# image's layout under another prefix, which the host library recognises (host/lib/src/closure.rs),
# so the worker runs in the sandbox on the bundled
# loader and libraries, started as `ld-linux-x86-64.so.2 --library-path /usr/lib/tfsandbox ...`.
#
# A clean release build of the committed tree (git archive HEAD) in a folder of its own. The
# archive is the same bytes whatever folder it was built in: source paths are remapped, the worker
# names no build folder, entries are sorted with fixed owners, modes and mtimes (the commit's
# time, SOURCE_DATE_EPOCH), and gzip stores no name or time.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
started=$SECONDS

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
name=tfsandbox-$version-x86_64-linux
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] \
  || echo "note: uncommitted changes are not in the bundle (it builds HEAD)" >&2
SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH

# The pinned libtensorflow (cached in the checkout's .cache; downloaded once).
"$repo/scripts/setup-libtensorflow.sh"
tensorflow_lib=$(readlink -f "$repo/.cache/libtensorflow/lib")

work=$(mktemp -d "${TMPDIR:-/tmp}/tfsandbox-release.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$src"

echo "== building $name in $src"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
(
  cd "$src"
  export CARGO_TARGET_DIR=$src/target
  export PKG_CONFIG_PATH=$tensorflow_lib/pkgconfig
  # No path of this machine in the binaries (panic locations, line tables), from Rust or from the
  # C that build scripts compile (ring's).
  export RUSTFLAGS="--remap-path-prefix=$src=/tfsandbox --remap-path-prefix=$cargo_home=/cargo"
  export CFLAGS="-ffile-prefix-map=$src=/tfsandbox -ffile-prefix-map=$cargo_home=/cargo"
  # The worker's RUNPATH: the bundle's library folder, not this build's libtensorflow.
  export TFSANDBOX_WORKER_RUNPATH='$ORIGIN/../lib/tfsandbox'
  # Binaries by name, whichever crate holds them.
  nice -n 10 cargo build --release --locked --bin tfsandbox --bin tfsandbox-jailer \
    --bin tfsandbox-init --bin tfsandbox-worker
)
release=$src/target/release

echo "== staging the bundle"
stage=$work/stage/$name
mkdir -p "$stage/bin" "$stage/lib/tfsandbox"
install -m 0755 "$release/tfsandbox" "$release/tfsandbox-jailer" "$stage/bin/"
# The closure as the image builder resolves it: the worker, every library and the loader.
closure=$(env -i "$release/tfsandbox" image closure --worker "$release/tfsandbox-worker" \
  --library-dir "$tensorflow_lib")
interpreter=$(sed -n 's/.*entry point: \([^ ]*\) .*/\1/p' <<<"$closure")
while read -r image_path host_path; do
  case "$image_path" in
    # Named as in the image (libstdc++.so.6, not the host's libstdc++.so.6.0.30 it resolves to).
    /usr/bin/tfsandbox-worker | /usr/bin/tfsandbox-init) install -m 0755 "$host_path" "$stage${image_path#/usr}" ;;
    "$interpreter") install -m 0755 "$host_path" "$stage/lib/tfsandbox/$(basename "$image_path")" ;;
    /usr/lib/tfsandbox/*) install -m 0644 "$host_path" "$stage${image_path#/usr}" ;;
    *) fail "a closure file outside the image's layout: $image_path" ;;
  esac
done < <(sed -n 's/^ *[0-9]\+  \([^ ]*\) .*  <- \(.*\)$/\1 \2/p' <<<"$closure")

# From the bundle, the closure is the bundle's own files: nothing from this machine.
bundled=$(env -i "$stage/bin/tfsandbox" image closure)
echo "$bundled"
files=$(grep -c '  <- ' <<<"$bundled")
inside=$(grep -c "  <- $stage/" <<<"$bundled")
[ "$files" = "$inside" ] || fail "the bundle's closure takes $((files - inside)) files from outside it"
[ "$files" = "$(grep -c '  <- ' <<<"$closure")" ] || fail "the bundle's closure differs from the build's"

# No file names the folder it was built in (that would break byte-identical builds elsewhere).
leaks=$(grep -rlF -e "$work" -e "$repo" "$stage" || true)
[ -z "$leaks" ] || fail "these name the build folder: $leaks"

# The host side runs on the host's glibc: the oldest it needs, from its versioned symbols.
glibc=$(objdump -T "$stage/bin/tfsandbox" "$stage/bin/tfsandbox-jailer" \
  | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -n 1)
cat >"$stage/README.txt" <<EOF
tfsandbox $version for x86_64 Linux

bin/tfsandbox and bin/tfsandbox-jailer need glibc ${glibc#GLIBC_} or later and a kernel that allows
user namespaces and Landlock. The worker needs nothing of the host: it runs in its sandbox on the
loader and libraries in lib/tfsandbox (its exact closure, TensorFlow 2.18.1 included).

    bin/tfsandbox run --model DIR --input 'x=[[1.0],[2.0],[5.0]]'
EOF

echo "== packing"
find "$stage" -type d -exec chmod 0755 {} +
chmod 0644 "$stage/README.txt"
archive=$out/$name.tar.gz
tar --sort=name --format=gnu --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  -C "$work/stage" -cf - "$name" | gzip -n >"$archive"
sha256=$(sha256sum "$archive" | cut -d' ' -f1)
echo "$sha256  $name.tar.gz" >"$archive.sha256"
echo "$archive: $(stat -c %s "$archive") bytes ($(du -sb "$stage" | cut -f1) unpacked), sha256 $sha256"
echo "host side needs $glibc; built in $((SECONDS - started)) s"
