"""Batching through `tfsandbox serve --enable_batching`, with TensorFlow Serving's Python client.

Run by checks/tests/serve.rs with the venv from scripts/setup-serving-client.sh:

    batching.py model OUT_DIR
    batching.py call --address A --callers N --max-rows R [--negative K] [--regress]

`model` writes a SavedModel whose serving_default takes x [None, 1] and answers y = x / 2 + 2 and
rows: the number of rows of the run that answered, so each caller sees the size of the batch it
was in; a negative x fails the run (an assertion), as a bad request would. Its `regress`
signature (a TF2 one, named predict) takes serialized tf.Examples with a float feature x and
answers outputs = 1000 * rows + x / 2 + 2, the same two facts in one value. `call` starts N
callers at once, each sending one row (caller i sends i + 1; with --negative K, caller K sends
-1), as a Predict or, with --regress, a Regress of one Example, and checks: each good caller gets
its own y back, no run held more than R rows, some run held exactly R, and the negative caller
alone failed, with INVALID_ARGUMENT.
"""

import argparse
import sys
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc, regression_pb2


class RowsModel(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        check = tf.debugging.assert_greater_equal(x, 0.0, message="x must not be negative")
        with tf.control_dependencies([check]):
            rows = tf.cast(tf.shape(x)[0], tf.float32)
            return {"y": x / 2.0 + 2.0, "rows": tf.fill(tf.shape(x), rows)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        answer = self.serve(x)
        return {"outputs": tf.reshape(1000.0 * answer["rows"] + answer["y"], [-1])}


def model(args):
    m = RowsModel()
    signatures = {
        "serving_default": m.serve.get_concrete_function(),
        "regress": m.regress.get_concrete_function(),
    }
    tf.saved_model.save(m, args.out, signatures=signatures)


def regress(stub, x):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "rows"
    request.model_spec.signature_name = "regress"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(x)
    value = stub.Regress(request, timeout=60).result.regressions[0].value
    rows = round(value // 1000)
    return value - 1000 * rows, rows


def call(args):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.address))
    results = [None] * args.callers
    start = threading.Barrier(args.callers)

    def caller(i):
        x = -1.0 if i == args.negative else float(i + 1)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "rows"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[x]], dtype=np.float32)))
        start.wait()
        try:
            if args.regress:
                results[i] = (x, *regress(stub, x))
                return
            response = stub.Predict(request, timeout=60)
            results[i] = (x, tf.make_ndarray(response.outputs["y"]).item(),
                          tf.make_ndarray(response.outputs["rows"]).item())
        except grpc.RpcError as error:
            results[i] = (x, error.code(), error.details())

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(args.callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for i, (x, a, b) in enumerate(results):
        if i == args.negative:
            assert a == grpc.StatusCode.INVALID_ARGUMENT, results[i]
            assert "x must not be negative" in b, results[i]
            continue
        assert abs(a - (x / 2.0 + 2.0)) < 1e-3, f"caller {i} got another's answer: {results[i]}"
        rows.append(b)
    print(f"  rows of the runs that answered each caller: {sorted(rows)}")
    assert max(rows) <= args.max_rows, rows
    if args.negative is None:
        assert args.max_rows in rows, f"no run held {args.max_rows} rows: {rows}"


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model")
    m.add_argument("out")
    c = sub.add_parser("call")
    c.add_argument("--address", required=True)
    c.add_argument("--callers", type=int, required=True)
    c.add_argument("--max-rows", type=int, required=True)
    c.add_argument("--negative", type=int)
    c.add_argument("--regress", action="store_true")
    args = parser.parse_args()
    {"model": model, "call": call}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
