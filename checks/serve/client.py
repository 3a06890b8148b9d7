"""Drives `tfsandbox serve` with TensorFlow Serving's own Python client (tensorflow-serving-api).

Run by checks/tests/serve.rs with the venv from scripts/setup-serving-client.sh:

    client.py basic  --address 127.0.0.1:PORT --unix-socket PATH
    client.py switch --address 127.0.0.1:PORT --base DIR --source DIR --new-version 3
    client.py tls    --address 127.0.0.1:PORT --root-cert PEM
    client.py auth   --address 127.0.0.1:PORT --unix-socket PATH --root-cert PEM
                     --client-cert PEM --client-key PEM --token TOKEN
    client.py reload --address 127.0.0.1:PORT --base DIR --config-file PATH

`basic` checks Predict (tensor_content and typed *_val inputs, strings), GetModelMetadata,
GetModelStatus, health and reflection, and the status codes of bad requests. `switch` keeps a
stream of Predicts going from several threads, adds a version folder under the base path, and
requires zero failed calls and that the answers move to the new version. Any failed check raises;
the exit status is then non-zero and the traceback says which. `auth` calls a server with mutual
TLS and a policy the way a TensorFlow Serving client would: a client certificate, bearer tokens
as call credentials and as `authorization` metadata, and the Unix socket, each with the status
TensorFlow Serving's clients expect (UNAUTHENTICATED, PERMISSION_DENIED). `reload` replaces the
served models with ModelService.HandleReloadConfigRequest (a new model, a version policy and a
label, a label naming a version not served, a base path with no version, a model left out), then
rewrites the model config file the server polls and waits for it to be followed.
"""

import argparse
import os
import shutil
import sys
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.config import model_server_config_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    regression_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MODEL = "half_plus_two"
ECHO = "string_echo"
ALL = "half_plus_two_all"
CLASSIFIER = "classifier"  # made by make_classifier.py
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


def shape(*dims):
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def predict_request(model, inputs, version=None, signature=None, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if signature is not None:
        request.model_spec.signature_name = signature
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def x_content(values):
    """x as tensor_content (what tf.make_tensor_proto writes for a numpy array)."""
    array = np.array(values, dtype=np.float32).reshape(-1, 1)
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape(len(values), 1), tensor_content=array.tobytes()
    )


def x_typed(values):
    """x as float_val (what hand-written clients in other languages often send)."""
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape(len(values), 1), float_val=values
    )


def example(x):
    """A tf.Example with the float feature x."""
    return example_pb2.Example(
        features=feature_pb2.Features(
            feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[x]))}
        )
    )


def expect_error(call, code, text):
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        assert text in error.details(), f"expected '{text}' in: {error.details()}"
        print(f"  {code.name}: {error.details()}")
        return
    raise AssertionError(f"expected {code} ({text}), the call succeeded")


def basic(args):
    channel = grpc.insecure_channel(args.address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)

    print("Predict, tensor_content")
    response = stub.Predict(predict_request(MODEL, {"x": x_content([1.0, 2.0, 5.0])}), timeout=60)
    y = tf.make_ndarray(response.outputs["y"])
    assert y.tolist() == [[2.5], [3.0], [4.5]], y
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5], "answers use float_val"
    assert not response.outputs["y"].tensor_content, "answers use float_val, as TF Serving's"
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 2, response.model_spec
    assert response.model_spec.signature_name == "serving_default"

    print("Predict, float_val and tf.make_tensor_proto, another signature, output_filter")
    response = stub.Predict(predict_request(MODEL, {"x": x_typed([1.0, 4.0])}), timeout=60)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5], [4.0]]
    proto = tf.make_tensor_proto([[4.0]], dtype=tf.float32)
    response = stub.Predict(
        predict_request(MODEL, {"x": proto}, signature="x_to_y2", output_filter=["y2"]), timeout=60
    )
    assert list(response.outputs) == ["y2"], list(response.outputs)
    assert response.model_spec.signature_name == "x_to_y2"

    print("Predict, strings")
    words = [b"hello", b"TfSandbox42", b"", "h\u00e9llow\u00f6rld".encode()]
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape(4), string_val=words)
    response = stub.Predict(predict_request(ECHO, {"text": text}), timeout=60)
    assert tf.make_ndarray(response.outputs["length"]).tolist() == [5, 11, 0, 12]
    assert list(response.outputs["upper"].string_val)[:2] == [b"HELLO", b"TFSANDBOX42"]

    print("GetModelMetadata")
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=60)
    assert response.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict", default
    assert default.inputs["x"].dtype == types_pb2.DT_FLOAT
    assert default.inputs["x"].name == "x:0", "TensorInfo names the graph tensor"
    assert [d.size for d in default.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert default.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert {"serving_default", "half", "x_to_y2"} <= set(signatures.signature_def)

    print("GetModelStatus")
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = models.GetModelStatus(request, timeout=60)
    states = {s.version: s for s in response.model_version_status}
    assert list(states) == [2], response
    assert states[2].state == AVAILABLE and states[2].status.error_code == 0, response

    print("every version served (model_version_policy all), ModelSpec.version picks one")
    for version in [1, 2]:
        response = stub.Predict(predict_request(ALL, {"x": x_typed([1.0])}, version=version), timeout=60)
        assert response.model_spec.version.value == version, response.model_spec
    response = stub.Predict(predict_request(ALL, {"x": x_typed([1.0])}), timeout=60)
    assert response.model_spec.version.value == 2, "no version asked: the latest"
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = ALL
    request.model_spec.version.value = 1
    response = models.GetModelStatus(request, timeout=60)
    assert [(s.version, s.state) for s in response.model_version_status] == [(1, AVAILABLE)], response

    print("Classify, Regress, MultiInference on tf.Example inputs")
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = CLASSIFIER
    classify.input.example_list.examples.extend([example(0.25), example(1.0)])
    response = stub.Classify(classify, timeout=60)
    got = [[(c.label, round(c.score, 6)) for c in row.classes] for row in response.result.classifications]
    assert got == [[("pos", 0.25), ("neg", 0.75)], [("pos", 1.0), ("neg", 0.0)]], got
    assert response.model_spec.version.value == 1 and response.model_spec.signature_name == "serving_default"
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = CLASSIFIER
    regress.model_spec.signature_name = "regress"
    # Context features reach every example.
    regress.input.example_list_with_context.context.CopyFrom(example(0.5))
    regress.input.example_list_with_context.examples.extend([example_pb2.Example(), example(1.0)])
    response = stub.Regress(regress, timeout=60)
    assert [r.value for r in response.result.regressions] == [2.25, 2.5], response.result
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in [("classify", "tensorflow/serving/classify"), ("regress", "tensorflow/serving/regress")]:
        task = multi.tasks.add()
        task.model_spec.name = CLASSIFIER
        task.model_spec.signature_name = signature
        task.method_name = method
    multi.input.example_list.examples.extend([example(0.5)])
    response = stub.MultiInference(multi, timeout=60)
    assert len(response.results) == 2, response
    assert response.results[0].classification_result.classifications[0].classes[0].score == 0.5
    assert response.results[1].regression_result.regressions[0].value == 2.25
    classify.model_spec.name = MODEL
    expect_error(
        lambda: stub.Classify(classify, timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict",
    )

    print("errors")
    expect_error(
        lambda: stub.Predict(predict_request("nope", {"x": x_typed([1.0])}), timeout=60),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    )
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": x_typed([1.0])}, version=1), timeout=60),
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({MODEL}, 1)",
    )
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    expect_error(lambda: models.GetModelStatus(request, timeout=60), grpc.StatusCode.NOT_FOUND, "nope")
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"z": x_typed([1.0])}), timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'z'",
    )
    ints = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, tensor_shape=shape(1, 1), int_val=[1])
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": ints}), timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "x",
    )
    half = tensor_pb2.TensorProto(dtype=types_pb2.DT_HALF, tensor_shape=shape(1, 1), half_val=[1])
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": half}), timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "DT_HALF",
    )
    short = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(2, 1), tensor_content=b"\0" * 5)
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": short}), timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor_content",
    )
    # One value fills any shape; a huge shape is refused before it is built.
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(1 << 40, 1), float_val=[1.0])
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": huge}), timeout=60),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "max_tensor_bytes",
    )
    expect_error(
        lambda: stub.Predict(predict_request(MODEL, {"x": x_typed([1.0])}, signature="nah"), timeout=60),
        grpc.StatusCode.INVALID_ARGUMENT,
        'Serving signature key "nah" not found.',
    )

    print("TensorFlow's profiler: refused at once, saying why")
    profile = channel.unary_unary(
        "/tensorflow.ProfilerService/Profile", request_serializer=None, response_deserializer=None
    )
    expect_error(lambda: profile(b"", timeout=10), grpc.StatusCode.UNIMPLEMENTED, "profiler is not supported")

    print("health and reflection")
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
    )
    # HealthCheckResponse{status: SERVING (1)}, encoded by hand: no health package is needed.
    assert check(b"", timeout=10) == b"\x08\x01"
    reflect = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    # ServerReflectionRequest{list_services: ""} (field 7).
    listing = b"".join(reflect(iter([b"\x3a\x00"]), timeout=10))
    for service in [b"tensorflow.serving.PredictionService", b"tensorflow.serving.ModelService"]:
        assert service in listing, listing

    if args.unix_socket:
        print("Predict over the Unix socket, with gRPC Python's default options")
        # gRPC Python sends the socket path as :authority; the server must take it as TF
        # Serving does. Several calls on one channel: later ones name the authority by its
        # HPACK table index.
        for target in [f"unix:{args.unix_socket}", f"unix://{os.path.abspath(args.unix_socket)}"]:
            local = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
            for _ in range(3):
                response = local.Predict(predict_request(MODEL, {"x": x_content([3.0])}), timeout=60)
                assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.5]], target
    print("basic: all checks passed")


def tls(args):
    with open(args.root_cert, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    # The certificate names localhost; the server listens on 127.0.0.1.
    channel = grpc.secure_channel(
        args.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(MODEL, {"x": x_typed([2.0])}), timeout=60)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0]]
    assert response.model_spec.version.value == 1
    plain = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.address))
    try:
        plain.Predict(predict_request(MODEL, {"x": x_typed([2.0])}), timeout=10)
    except grpc.RpcError as error:
        print(f"  plain text refused: {error.code().name}")
    else:
        raise AssertionError("a plain-text call succeeded on the TLS port")
    print("tls: all checks passed")


def auth(args):
    """The policy (written by serve.rs): cert:client-a may Predict half_plus_two, the token's
    holder may GetModelStatus on it, this uid may GetModelMetadata on it over the Unix socket."""
    read = lambda path: open(path, "rb").read()
    ssl = grpc.ssl_channel_credentials(
        root_certificates=read(args.root_cert),
        private_key=read(args.client_key),
        certificate_chain=read(args.client_cert),
    )
    target = [("grpc.ssl_target_name_override", "localhost")]
    channel = grpc.secure_channel(args.address, ssl, options=target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL

    # The certificate's identity alone.
    response = stub.Predict(predict_request(MODEL, {"x": x_typed([2.0])}), timeout=60)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0]]
    expect_error(
        lambda: models.GetModelStatus(status_request, timeout=60),
        grpc.StatusCode.PERMISSION_DENIED,
        "cert:client-a may not call GetModelStatus on model 'half_plus_two'",
    )
    # The token as gRPC's own call credentials (authorization: Bearer ...), and as metadata.
    with_token = grpc.secure_channel(
        args.address,
        grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(args.token)),
        options=target,
    )
    response = model_service_pb2_grpc.ModelServiceStub(with_token).GetModelStatus(
        status_request, timeout=60
    )
    assert response.model_version_status[0].state == AVAILABLE
    models.GetModelStatus(
        status_request, metadata=[("authorization", f"Bearer {args.token}")], timeout=60
    )
    expect_error(
        lambda: stub.Predict(
            predict_request(MODEL, {"x": x_typed([2.0])}),
            metadata=[("authorization", "Bearer not-the-token")],
            timeout=60,
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "the bearer token is not valid",
    )
    # No client certificate: the handshake fails, so the call does not reach the server.
    anonymous = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.secure_channel(
            args.address,
            grpc.ssl_channel_credentials(root_certificates=read(args.root_cert)),
            options=target,
        )
    )
    try:
        anonymous.Predict(predict_request(MODEL, {"x": x_typed([2.0])}), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        print(f"  no client certificate: {error.code().name}")
    else:
        raise AssertionError("a call without a client certificate succeeded")

    # The Unix socket: this process's uid.
    local = grpc.insecure_channel(f"unix:{args.unix_socket}")
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = MODEL
    request.metadata_field.append("signature_def")
    prediction_service_pb2_grpc.PredictionServiceStub(local).GetModelMetadata(request, timeout=60)
    expect_error(
        lambda: prediction_service_pb2_grpc.PredictionServiceStub(local).Predict(
            predict_request(MODEL, {"x": x_typed([2.0])}), timeout=60
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        f"uid:{os.getuid()} may not call Predict",
    )
    print("auth: all checks passed")


def switch(args):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.address))
    models = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(args.address))
    lock = threading.Lock()
    seen = []  # (time, version) of every answer
    failures = []
    stop = threading.Event()

    def caller():
        request = predict_request(MODEL, {"x": x_content([1.0, 2.0])})
        while not stop.is_set():
            try:
                response = stub.Predict(request, timeout=60)
                assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2.5], [3.0]]
                with lock:
                    seen.append((time.monotonic(), response.model_spec.version.value))
            except Exception as error:  # noqa: BLE001 - every failure counts
                with lock:
                    failures.append(repr(error))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        with lock:
            before = len(seen)
        assert before > 0 and not failures, (before, failures[:3])
        # A new version appears the way a deployment writes one: in full, then renamed into place.
        staging = os.path.join(args.base, f".staging-{args.new_version}")
        shutil.copytree(args.source, staging)
        os.rename(staging, os.path.join(args.base, str(args.new_version)))
        print(f"added version {args.new_version} after {before} answers")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            with lock:
                switched = [t for t, v in seen if v == args.new_version]
            if switched and time.monotonic() - switched[0] > 3:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()

    versions = [v for _, v in seen]
    print(f"{len(versions)} answers, {len(failures)} failures, versions {sorted(set(versions))}")
    assert not failures, failures[:5]
    assert args.new_version in versions, "the answers never moved to the new version"
    first_new = versions.index(args.new_version)
    assert set(versions[:first_new]) == {args.new_version - 1}, set(versions[:first_new])
    # Calls in flight at the switch may still finish on the old version; after that, none.
    late_old = [v for v in versions[first_new + 16:] if v != args.new_version]
    assert not late_old, f"{len(late_old)} answers from an old version well after the switch"

    # The old version retires once its calls are done.
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    deadline = time.monotonic() + 60
    while True:
        states = {s.version: s.state for s in models.GetModelStatus(request, timeout=10).model_version_status}
        if states.get(args.new_version) == AVAILABLE and states.get(args.new_version - 1) == END:
            break
        assert time.monotonic() < deadline, states
        time.sleep(0.2)
    print(f"switched: {states}")

    # A version that cannot load ends with its error; the one before keeps answering.
    broken = args.new_version + 1
    staging = os.path.join(args.base, f".staging-{broken}")
    os.makedirs(staging)
    with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    os.rename(staging, os.path.join(args.base, str(broken)))
    deadline = time.monotonic() + 60
    while True:
        statuses = {s.version: s for s in models.GetModelStatus(request, timeout=10).model_version_status}
        if broken in statuses and statuses[broken].state == END:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)
    assert statuses[broken].status.error_code != 0 and statuses[broken].status.error_message, statuses
    print(f"  version {broken}: {statuses[broken].status.error_message[:120]}")
    assert statuses[args.new_version].state == AVAILABLE, statuses
    response = stub.Predict(predict_request(MODEL, {"x": x_content([1.0])}), timeout=60)
    assert response.model_spec.version.value == args.new_version, response.model_spec
    print("switch: all checks passed")


def model_config(name, base_path, versions=None, labels=None):
    config = model_server_config_pb2.ModelConfig(
        name=name, base_path=base_path, model_platform="tensorflow"
    )
    if versions:
        config.model_version_policy.specific.versions.extend(versions)
    for label, version in (labels or {}).items():
        config.version_labels[label] = version
    return config


def reload_request(*configs):
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.extend(configs)
    return request


def reload(args):
    channel = grpc.insecure_channel(args.address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    half = os.path.join(args.base, MODEL)
    echo = os.path.join(args.base, ECHO)

    def predict_version(model=MODEL, **spec):
        response = stub.Predict(predict_request(model, {"x": x_content([1.0])}, **spec), timeout=60)
        return response.model_spec.version.value

    def echo_answers():
        request = predict_request(ECHO, {"text": tf.make_tensor_proto([b"hi"])})
        response = stub.Predict(request, timeout=60)
        return list(response.outputs["upper"].string_val)

    assert predict_version() == 2, "the config at start serves the latest version"

    print("reload: a second model, version 1 only, and a label on it")
    response = models.HandleReloadConfigRequest(
        reload_request(
            model_config(MODEL, half, versions=[1], labels={"stable": 1}),
            model_config(ECHO, echo),
        ),
        timeout=120,
    )
    assert response.status.error_code == 0, response
    assert echo_answers() == [b"HI"]
    assert predict_version() == 1, "version 2 is no longer wanted"
    request = predict_request(MODEL, {"x": x_content([1.0])})
    request.model_spec.version_label = "stable"
    assert stub.Predict(request, timeout=60).model_spec.version.value == 1

    print("reload: a label on a version not served")
    expect_error(
        lambda: models.HandleReloadConfigRequest(
            reload_request(
                model_config(MODEL, half, versions=[1], labels={"stable": 2}),
                model_config(ECHO, echo),
            ),
            timeout=120,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 2 of model half_plus_two, which is not currently available for inference",
    )
    request.model_spec.version_label = "stable"
    assert stub.Predict(request, timeout=60).model_spec.version.value == 1, "the old label stays"

    print("reload: a model with no version to load")
    empty = os.path.join(args.base, "empty")
    os.makedirs(empty, exist_ok=True)
    expect_error(
        lambda: models.HandleReloadConfigRequest(
            reload_request(
                model_config(MODEL, half, versions=[1]),
                model_config(ECHO, echo),
                model_config("empty", empty),
            ),
            timeout=120,
        ),
        grpc.StatusCode.NOT_FOUND,
        "no version of model 'empty' could be loaded",
    )
    assert predict_version() == 1, "the models that loaded are served"

    print("reload: a config that is not a model_config_list")
    expect_error(
        lambda: models.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(), timeout=60
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Only ModelConfigList is currently supported",
    )
    assert echo_answers() == [b"HI"], "string_echo is served until a config leaves it out"

    print("the model config file, rewritten: the server polls it and follows")
    with open(args.config_file + ".new", "w") as f:
        f.write(f"model_config_list {{ config {{ name: '{ECHO}' base_path: '{echo}' }} }}\n")
    os.rename(args.config_file + ".new", args.config_file)
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            predict_version()
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            assert f"Servable not found for request: Latest({MODEL})" in error.details()
            break
        assert time.monotonic() < deadline, "the rewritten config file was not followed"
        time.sleep(0.5)
    assert echo_answers() == [b"HI"]
    print("  half_plus_two unloaded, string_echo served")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["basic", "switch", "tls", "auth", "reload"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--unix-socket")
    parser.add_argument("--base")
    parser.add_argument("--source")
    parser.add_argument("--new-version", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--root-cert")
    parser.add_argument("--client-cert")
    parser.add_argument("--client-key")
    parser.add_argument("--token")
    parser.add_argument("--config-file")
    args = parser.parse_args()
    {"basic": basic, "switch": switch, "tls": tls, "auth": auth, "reload": reload}[args.phase](args)


if __name__ == "__main__":
    sys.exit(main())
