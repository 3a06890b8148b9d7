#!/usr/bin/env bash
# Runs TensorFlow Serving's own integration suite against `tfsandbox serve`, unchanged:
# tensorflow_serving/model_servers/tensorflow_model_server_test.py with its base class
# test_util/tensorflow_model_server_test_base.py, from a checkout of tensorflow/serving at PATH
# (fetched outside this repository; nothing of it is copied here). The suite starts
# `tensorflow_model_server` from $TEST_SRCDIR; there a shim of that name only inserts `serve`.
# Its test models are TensorFlow Serving's testdata in ../shared/tfserving-testdata.
#
#   scripts/tfserving-suite.sh PATH [TEST ...]     e.g. TensorflowModelServerTest.testPredictREST
#
# Needs target/debug/tfsandbox (or $TFSANDBOX) and its worker built, and .cache/serving-venv
# (scripts/setup-serving-client.sh); portpicker, which the suite imports, is added to that venv,
# and tf_keras: the suite's Keras tests name their Sequential model's input `x`, which Keras 2
# keeps in the exported signature and Keras 3 (TensorFlow 2.18's default) renames `inputs`, so
# they run with TF_USE_LEGACY_KERAS=1, as against TensorFlow Serving's own build.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1/tensorflow_serving/model_servers/tensorflow_model_server_test.py" ]; then
  echo "usage: $0 PATH-TO-tensorflow-serving-CHECKOUT [TEST ...]" >&2
  exit 2
fi
checkout=$(cd "$1" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
tfsandbox=${TFSANDBOX:-$root/target/debug/tfsandbox}
testdata=$(cd "$root/../shared/tfserving-testdata" && pwd)
python="$root/.cache/serving-venv/bin/python"

"$root/scripts/setup-serving-client.sh" >/dev/null
"$python" -c 'import portpicker' 2>/dev/null || "$python" -m pip install --quiet portpicker
"$python" -c 'import tf_keras' 2>/dev/null || "$python" -m pip install --quiet tf_keras==2.18.0

work=$(mktemp -d -t tfserving-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT
servers="$work/srcdir/tf_serving/tensorflow_serving"
mkdir -p "$servers/model_servers" "$servers/servables/tensorflow"
ln -s "$testdata" "$servers/servables/tensorflow/testdata"
cat >"$servers/model_servers/tensorflow_model_server" <<EOF
#!/bin/sh
exec "$tfsandbox" serve "\$@"
EOF
chmod +x "$servers/model_servers/tensorflow_model_server"

# The installed tensorflow_serving package (the client's protos) is extended with the
# checkout's, so the suite's `tensorflow_serving.model_servers.test_util` import finds its base.
cat >"$work/run.py" <<'EOF'
import os, runpy, sys
import tensorflow_serving
tensorflow_serving.__path__.append(os.path.join(os.environ["SUITE_CHECKOUT"], "tensorflow_serving"))
test = os.path.join(os.environ["SUITE_CHECKOUT"], "tensorflow_serving/model_servers/tensorflow_model_server_test.py")
sys.argv = [test] + sys.argv[1:]
runpy.run_path(test, run_name="__main__")
EOF

mkdir -p "$work/tmp"
cd "$work"
SUITE_CHECKOUT="$checkout" TEST_SRCDIR="$work/srcdir" TEST_TMPDIR="$work/tmp" \
  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 "$python" "$work/run.py" "$@"
