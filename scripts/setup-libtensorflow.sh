#!/usr/bin/env bash
# Fetches the pinned libtensorflow from PyPI wheels. Idempotent: a finished cache is kept, and
# downloaded wheels are kept in .cache/wheels* so nothing is downloaded twice.
#
#   setup-libtensorflow.sh                  # CPU: the tensorflow-cpu wheel -> .cache/libtensorflow,
#                                           # with the pkg-config file tensorflow-sys links through
#   setup-libtensorflow.sh --variant cuda   # CUDA: the tensorflow wheel and the nvidia-* wheels of
#                                           # its `and-cuda` extra -> .cache/libtensorflow-cuda/lib
#
# The worker is always built against the CPU library (it links libtensorflow_cc.so.2 and
# libtensorflow_framework.so.2 by soname); the CUDA folder is what the CUDA image is built from
# (`tfsandbox image build --variant cuda --library-dir .cache/libtensorflow-cuda/lib`).
set -euo pipefail

TF_VERSION=2.18.1
# The wheels are pinned by hash: pip refuses anything else.
WHEEL_SHA256=810c75d7149d2da0cb2092187817b0dcabb80728ca9f9cf3a61f3f42fadd1298
# The CUDA build of the same release (nix/libtensorflow-pin.nix pins the same hash).
CUDA_WHEEL_SHA256=c9f87e5d2a680a4595f5dc30daf6bbaec9d4129b46d7ef1b2af63c46ac7d2828
# The versions are those tensorflow 2.18.1's METADATA pins for `extra == "and-cuda"`; the hashes
# are PyPI's for the manylinux2014_x86_64 wheels. Only the wheels that ship a library of the
# dlopen() manifest (host/lib/src/dlopen.json) or a DT_NEEDED of one are fetched; the extra's
# nvidia-cuda-cupti-cu12 (loaded only by TensorFlow's profiler), nvidia-cuda-nvcc-cu12 (ptxas
# and libdevice, which only XLA's JIT compilation uses) and nvidia-cuda-nvrtc-cu12 (loaded only
# by cuDNN's runtime-compiled engines; cuDNN falls back to its precompiled ones) are not.
CUDA_WHEELS=(
  "nvidia-cublas-cu12==12.5.3.2 --hash=sha256:ca070ad70e9fa6654084575d01bd001f30cc4665e33d4bb9fc8e0f321caa034b"
  "nvidia-cuda-runtime-cu12==12.5.82 --hash=sha256:3e79a060e126df40fd3a068f3f787eb000fa51b251ec6cd97d09579632687115"
  "nvidia-cudnn-cu12==9.3.0.75 --hash=sha256:9ad9c6929ebb5295eb4a1728024666d1c88283373e265a0c5c883e6f9d5cd76d"
  "nvidia-cufft-cu12==11.2.3.61 --hash=sha256:9a6e8df162585750f61983a638104a48c756aa13f9f48e19ab079b38e3c828b8"
  "nvidia-curand-cu12==10.3.6.82 --hash=sha256:2823fb27de4e44dbb22394a6adf53aa6e1b013aca0f8c22867d1cfae58405536"
  "nvidia-cusolver-cu12==11.6.3.83 --hash=sha256:93cfafacde4428b71778eeb092ec615a02a3d05404da1bcf91c53e3fa1bce42b"
  "nvidia-cusparse-cu12==12.5.1.3 --hash=sha256:016df8e993c437e8301e62739f01775cba988fd5253cd4c64173f8e8d2f8e752"
  "nvidia-nccl-cu12==2.21.5 --hash=sha256:8579076d30a8c24988834445f8d633c697d42397e92ffc3f63fa26766d25e0a0"
  "nvidia-nvjitlink-cu12==12.5.82 --hash=sha256:f9b37bc5c8cf7509665cb6ada5aaa0ce65618f2332b7d3e78e9790511f111212"
)

variant=cpu
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variant=${2:-}; shift 2 ;;
    --variant=*) variant=${1#--variant=}; shift ;;
    *) echo "usage: $0 [--variant cpu|cuda]" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)

# Downloads the requirements file $1 into $2 (kept between runs). The platform and Python tags are
# fixed so every machine gets the same wheels, whatever its Python. Both spellings of the platform
# are given: pip 23 does not treat manylinux2014 as an alias of manylinux_2_17, and the nvidia
# wheels are tagged only manylinux2014_x86_64.
download() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --python-version 3.11 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r "$1" -d "$2"
}

setup_cpu() {
  local dest="$root/.cache/libtensorflow"
  local stamp="$dest/.complete-$TF_VERSION"
  if [ -f "$stamp" ]; then
    echo "libtensorflow $TF_VERSION already in .cache/libtensorflow"
    return
  fi

  # Global, not local: the EXIT trap runs after this function has returned.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT

  echo "tensorflow-cpu==$TF_VERSION --hash=sha256:$WHEEL_SHA256" >"$work/requirements.txt"
  download "$work/requirements.txt" "$work/wheel"

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
}

setup_cuda() {
  local dest="$root/.cache/libtensorflow-cuda"
  local wheels="$root/.cache/wheels-cuda"
  # The stamp names the wheel list, so a changed list redoes the folder.
  local stamp="$dest/.complete-$TF_VERSION-$(printf '%s\n' "${CUDA_WHEELS[@]}" | sha256sum | cut -c1-12)"
  if [ -f "$stamp" ]; then
    echo "libtensorflow $TF_VERSION (CUDA) already in .cache/libtensorflow-cuda"
    return
  fi

  mkdir -p "$wheels"
  local requirements="$wheels/requirements.txt"
  {
    echo "tensorflow==$TF_VERSION --hash=sha256:$CUDA_WHEEL_SHA256"
    printf '%s\n' "${CUDA_WHEELS[@]}"
  } >"$requirements"
  # pip keeps a wheel already in $wheels whose hash matches, so a rerun downloads nothing.
  download "$requirements" "$wheels"

  rm -rf "$dest"
  mkdir -p "$dest/lib"
  # Only shared libraries, all into one flat folder, as the image lays them out: the two
  # TensorFlow libraries from tensorflow/, and every nvidia/<component>/lib/*.so* file.
  python3 - "$dest/lib" "$wheels"/tensorflow-*.whl "$wheels"/nvidia_*.whl <<'PY'
import os, re, shutil, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
so = re.compile(r"\.so(\.\d+)*$")
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for n in z.namelist():
            if n.startswith("tensorflow/"):
                keep = n in ("tensorflow/libtensorflow_cc.so.2", "tensorflow/libtensorflow_framework.so.2")
            else:
                keep = re.fullmatch(r"nvidia/[^/]+/lib/[^/]+", n) is not None and so.search(n)
            if not keep:
                continue
            target = os.path.join(out, os.path.basename(n))
            if os.path.exists(target):
                sys.exit(f"{os.path.basename(n)} is in two wheels")
            with z.open(n) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.chmod(target, 0o755)
PY
  touch "$stamp"
  echo "libtensorflow $TF_VERSION (CUDA) ready in .cache/libtensorflow-cuda/lib"
}

case "$variant" in
  cpu) setup_cpu ;;
  cuda) setup_cuda ;;
  *) echo "unknown variant '$variant' (cpu or cuda)" >&2; exit 2 ;;
esac
