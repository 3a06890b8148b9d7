#!/usr/bin/env bash
# The GPU check of issue 9, for a machine with an NVIDIA GPU and its driver loaded.
#
# Runs checks/gpu/matmul_chain through the process runtime twice with tfsandbox-gpu-bench: with
# every GPU on the CUDA libraries, then on the CPU library without GPUs; records what Info
# reported (the GPUs, whether TensorFlow registered them), TensorFlow's own "Created device" lines
# (device placement) and the time per call of each, and appends a dated section to BENCHMARKS.md.
# A run that fails is recorded as failed, with its error; no figure is ever written that was not
# measured here.
#
#   checks/gpu/run-on-gpu.sh [--size N] [--steps K] [--runs R]
#
# Needs: the CUDA libraries (scripts/setup-libtensorflow.sh --variant cuda, run here if missing,
# which needs PyPI; without it, a Python with tensorflow[and-cuda] installed is used) and, for the
# CPU run, the CPU library (else the CUDA build computes without GPUs), and the binaries tfsandbox-gpu-bench, tfsandbox-worker and
# tfsandbox-jailer side by side in BIN_DIR (default target/release, built here if missing, which
# needs cargo and the crates). Raw output goes to $OUT (default a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/../.."

size=4096
steps=20
runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--size N] [--steps K] [--runs R]" >&2; exit 2 ;;
  esac
done
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
bin=${BIN_DIR:-target/release}
cuda_lib=.cache/libtensorflow-cuda/lib

echo "== the machine"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  cat /proc/driver/nvidia/version 2>/dev/null || echo "no /proc/driver/nvidia/version"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version,pci.bus_id --format=csv || echo "no nvidia-smi"
  ls -l /dev/nvidia* 2>&1 || true
  ldconfig -p | grep -E 'libcuda\.so\.1|libnvidia-ptxjitcompiler' || echo "no libcuda.so.1 in the loader cache"
  echo "cpus: $(nproc)"
} 2>&1 | tee "$out/machine.txt"

[ -f .cache/libtensorflow/lib/libtensorflow_cc.so.2 ] || ./scripts/setup-libtensorflow.sh || true
if [ ! -f "$cuda_lib/libtensorflow_cc.so.2" ] && ! ./scripts/setup-libtensorflow.sh --variant cuda; then
  # No PyPI: a Python that has tensorflow[and-cuda] installed will do. Its libraries are linked
  # into one flat folder, as the setup script lays them out; its version is recorded.
  cuda_lib="$out/cuda-lib"
  mkdir -p "$cuda_lib"
  for site in $(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))'); do
    if [ -f "$site/tensorflow/libtensorflow_cc.so.2" ]; then
      ln -sf "$site"/tensorflow/libtensorflow_cc.so.2 "$site"/tensorflow/libtensorflow_framework.so.2 "$cuda_lib"/
      for lib in "$site"/nvidia/*/lib/*.so*; do
        if [ -e "$lib" ]; then ln -sf "$lib" "$cuda_lib"/; fi
      done
      echo "CUDA libraries from $site: $(ls -d "$site"/tensorflow*.dist-info "$site"/nvidia_*.dist-info 2>/dev/null | xargs -r -n1 basename | tr '\n' ' ')" | tee -a "$out/machine.txt"
      break
    fi
  done
  [ -f "$cuda_lib/libtensorflow_cc.so.2" ] || { echo "no CUDA libraries: no PyPI and no installed tensorflow[and-cuda]" >&2; exit 1; }
fi
# The CPU run uses the CPU library where there is one, else the CUDA build without GPUs; named
# explicitly, since binaries built elsewhere carry another checkout's RUNPATH.
cpu_lib=$cuda_lib
[ -f .cache/libtensorflow/lib/libtensorflow_cc.so.2 ] && cpu_lib=.cache/libtensorflow/lib
cpu_args=(--cpu-library-dir "$cpu_lib")
if [ ! -x "$bin/tfsandbox-gpu-bench" ] || [ ! -x "$bin/tfsandbox-worker" ] || [ ! -x "$bin/tfsandbox-jailer" ]; then
  cargo build --release -p tfsandbox-checks --bin tfsandbox-gpu-bench -p tfsandbox-worker -p tfsandbox-jailer
fi
[ -f checks/gpu/matmul_chain/saved_model.pb ] || { echo "checks/gpu/matmul_chain is missing (checks/gpu/make_model.py)" >&2; exit 1; }

echo "== the benchmark (size $size, steps $steps, runs $runs)"
status=0
TFSANDBOX_LOG=${TFSANDBOX_LOG:-info} timeout 1200 "$bin/tfsandbox-gpu-bench" \
  --model checks/gpu/matmul_chain --cuda-library-dir "$cuda_lib" "${cpu_args[@]}" \
  --size "$size" --steps "$steps" --runs "$runs" \
  >"$out/bench.jsonl" 2>"$out/bench.stderr" || status=$?
cat "$out/bench.jsonl"
# TensorFlow's own record of the devices it made (placement goes to a registered GPU by default).
grep -E "Created device|Could not find cuda drivers|Cannot dlopen|failed call to cuInit|Operation not permitted" \
  "$out/bench.stderr" | sed 's/^.*\(Created device\)/\1/' >"$out/devices.txt" || true
cat "$out/devices.txt"

python3 - "$out" "$status" >>BENCHMARKS.md <<'PY'
import json, sys
out, status = sys.argv[1], int(sys.argv[2])
machine = open(f"{out}/machine.txt").read().strip().splitlines()
reports = {}
for line in open(f"{out}/bench.jsonl"):
    line = line.strip()
    if line:
        r = json.loads(line)
        reports[r["mode"]] = r
devices = open(f"{out}/devices.txt").read().strip()
print(f"\n## GPU run, {machine[0]} (checks/gpu/run-on-gpu.sh)\n")
print("Machine:\n\n```\n" + "\n".join(machine[1:]) + "\n```\n")
gpu, cpu = reports.get("gpu", {}), reports.get("cpu", {})
for mode, r in (("GPU", gpu), ("CPU", cpu)):
    if "error" in r or not r:
        print(f"- {mode} run FAILED: {r.get('error', 'no report (exit status %d)' % status)}")
if gpu and "error" not in gpu:
    print(f"- TensorFlow {gpu['tensorflow_version']}; GPU registered by TensorFlow: {gpu['gpu_registered']}; "
          f"GPUs reported by Info: {json.dumps(gpu['gpus'])}")
print("- TensorFlow's device lines in the worker's log:\n\n```\n" + (devices or "(none)") + "\n```\n")
ok = {m: r for m, r in (("gpu", gpu), ("cpu", cpu)) if r and "error" not in r}
if ok:
    any_r = next(iter(ok.values()))
    print(f"`matmul_chain`, size {any_r['size']}, {any_r['steps']} steps "
          f"({2 * any_r['size'] ** 3 * any_r['steps'] / 1e9:.3g} GFLOP a call), {any_r['runs']} timed calls after one warm-up, process runtime:\n")
    print("| run | libtensorflow | median s/call | min s/call | GFLOP/s | first call s | start to first answer s | checksum |")
    print("|---|---|---|---|---|---|---|---|")
    for m, r in ok.items():
        print(f"| {m} | {r['library_dir']} | {r['median_call_s']:.4f} | {r['min_call_s']:.4f} | {r['gflops_per_s']:.1f} | "
              f"{r['first_call_s']:.3f} | {r['start_to_first_answer_s']:.3f} | {r['checksum']:.6g} |")
    if len(ok) == 2:
        print(f"\nGPU speed-up over CPU (median): {cpu['median_call_s'] / gpu['median_call_s']:.1f}x")
PY
echo "== appended to BENCHMARKS.md; raw output in $out"
exit "$status"
