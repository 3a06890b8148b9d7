"""Warmup files as TensorFlow Serving's users make them, and what a warmed-up model answers.

Run by checks/tests/serve.rs with the venv from scripts/setup-serving-client.sh:

    warmup.py write OUT KIND          KIND: counter (a Predict adding 5 to stateful_counter),
                                      session_run (a log kind not replayed), bad_input (a Predict
                                      naming an input the signature lacks)
    warmup.py peek --address A --model M --version V --expect N
    warmup.py status --address A --model M --version V --error TEXT   ('' for AVAILABLE)

`write` uses TensorFlow's own TFRecordWriter and TensorFlow Serving's PredictionLog, as the
warmup guide does. `peek` reads stateful_counter's count, which only warmup has added to.
"""

import argparse
import sys

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    session_service_pb2,
)


def predict_log(inputs, signature="serving_default"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write(args):
    if args.kind == "counter":
        logs = [predict_log({"increment": tf.make_tensor_proto(5, dtype=tf.int64)})]
    elif args.kind == "session_run":
        logs = [
            prediction_log_pb2.PredictionLog(
                session_run_log=prediction_log_pb2.SessionRunLog(
                    request=session_service_pb2.SessionRunRequest()
                )
            )
        ]
    elif args.kind == "bad_input":
        logs = [predict_log({"nope": tf.make_tensor_proto(5, dtype=tf.int64)})]
    with tf.io.TFRecordWriter(args.out) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def peek(args):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.address))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    request.model_spec.version.value = args.version
    request.model_spec.signature_name = "peek"
    request.inputs["unused"].CopyFrom(tf.make_tensor_proto(0, dtype=tf.int64))
    response = stub.Predict(request, timeout=60)
    count = tf.make_ndarray(response.outputs["count"]).item()
    assert count == args.expect, f"count {count}, expected {args.expect}"
    print(f"  {args.model} version {args.version}: count {count}")


def status(args):
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(args.address))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = args.model
    request.model_spec.version.value = args.version
    [version] = stub.GetModelStatus(request, timeout=60).model_version_status
    states = get_model_status_pb2.ModelVersionStatus
    if args.error:
        assert version.state == states.END, version
        assert args.error in version.status.error_message, version
    else:
        assert version.state == states.AVAILABLE, version
    print(f"  {args.model} version {args.version}: {states.State.Name(version.state)} {version.status.error_message}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out")
    w.add_argument("kind", choices=["counter", "session_run", "bad_input"])
    p = sub.add_parser("peek")
    p.add_argument("--address", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--expect", type=int, required=True)
    s = sub.add_parser("status")
    s.add_argument("--address", required=True)
    s.add_argument("--model", required=True)
    s.add_argument("--version", type=int, required=True)
    s.add_argument("--error", required=True)
    args = parser.parse_args()
    {"write": write, "peek": peek, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
