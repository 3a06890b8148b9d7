#!/usr/bin/env bash
# Creates .cache/serving-venv: the official TensorFlow Serving Python client (tensorflow-serving-api)
# that checks/tests/serve.rs drives against `tfsandbox serve`. Its generated modules import
# tensorflow's own protos (tensorflow.core.framework.tensor_pb2, ...), which only the tensorflow
# wheel ships, so tensorflow-cpu comes along: the same 2.18.1 the fixtures were made with.
# Idempotent: a finished venv is kept.
set -euo pipefail

SERVING_API_VERSION=2.18.0
TF_VERSION=2.18.1

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.cache/serving-venv"
stamp="$venv/.complete-$SERVING_API_VERSION-$TF_VERSION"

# Test processes may call this at once; one sets up, the others wait and then find it done.
mkdir -p "$root/.cache"
exec 9>"$root/.cache/serving-venv.lock"
flock 9

if [ -f "$stamp" ]; then
  echo "tensorflow-serving-api $SERVING_API_VERSION already in .cache/serving-venv"
  exit 0
fi

# tensorflow-cpu 2.18.1 publishes wheels for CPython 3.9 to 3.12 only.
if ! python3 -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 12))'; then
  echo "setup-serving-client.sh: tensorflow-cpu $TF_VERSION needs Python 3.9-3.12; python3 is $(python3 --version)" >&2
  exit 1
fi
# Debian's python3 leaves venv support to a separate package.
if ! python3 -c 'import ensurepip' 2>/dev/null && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "tensorflow-cpu==$TF_VERSION"
# Its requirement names the `tensorflow` wheel (CPU and GPU, three times the size); tensorflow-cpu
# provides the same modules, so the requirement is skipped rather than met twice.
"$venv/bin/python" -m pip install --quiet --no-deps "tensorflow-serving-api==$SERVING_API_VERSION"
# The generated stubs must import; fail here rather than in the test.
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" -c 'from tensorflow_serving.apis import prediction_service_pb2_grpc, model_service_pb2_grpc'
touch "$stamp"
echo "tensorflow-serving-api $SERVING_API_VERSION in .cache/serving-venv"
