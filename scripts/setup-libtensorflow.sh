#!/usr/bin/env bash
# Fetches the pinned libtensorflow (from the PyPI tensorflow-cpu wheel) into .cache/libtensorflow
# and writes the pkg-config file tensorflow-sys links through. Idempotent: a finished cache is kept.
set -euo pipefail

TF_VERSION=2.18.1
# The wheel is pinned by hash: pip refuses anything else.
WHEEL_SHA256=810c75d7149d2da0cb2092187817b0dcabb80728ca9f9cf3a61f3f42fadd1298

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/libtensorflow"
stamp="$dest/.complete-$TF_VERSION"

if [ -f "$stamp" ]; then
  echo "libtensorflow $TF_VERSION already in .cache/libtensorflow"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "tensorflow-cpu==$TF_VERSION --hash=sha256:$WHEEL_SHA256" >"$work/requirements.txt"
# The platform and Python tags are fixed so every machine gets the same wheel, whatever its Python.
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --python-version 3.11 --platform manylinux_2_17_x86_64 \
  -r "$work/requirements.txt" -d "$work/wheel"

rm -rf "$dest"
mkdir -p "$dest/lib/pkgconfig" "$dest/include"
python3 - "$work"/wheel/*.whl "$work/unpacked" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist()
             if n in ("tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2")
             or n.startswith("tensorflow/include/tensorflow/c/")]
    for n in names:
        z.extract(n, out)
PY
mv "$work/unpacked/tensorflow/libtensorflow_cc.so.2" "$work/unpacked/tensorflow/libtensorflow_framework.so.2" "$dest/lib/"
mkdir -p "$dest/include/tensorflow"
mv "$work/unpacked/tensorflow/include/tensorflow/c" "$dest/include/tensorflow/c"
# tensorflow-sys links `-ltensorflow`; the C API lives in libtensorflow_cc in this wheel.
ln -s libtensorflow_cc.so.2 "$dest/lib/libtensorflow.so"
ln -s libtensorflow_framework.so.2 "$dest/lib/libtensorflow_framework.so"

cat >"$dest/lib/pkgconfig/tensorflow.pc" <<PC
prefix=$dest
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: tensorflow
Description: TensorFlow C API (from the tensorflow-cpu $TF_VERSION wheel)
Version: $TF_VERSION
Libs: -L\${libdir} -ltensorflow -ltensorflow_framework
Cflags: -I\${includedir}
PC

touch "$stamp"
echo "libtensorflow $TF_VERSION ready in .cache/libtensorflow"
