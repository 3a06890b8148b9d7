"""Drives `tfsandbox serve`'s REST API with plain HTTP requests (urllib only), with the requests and
expected answers of TensorFlow Serving's own suite (tensorflow_model_server_test.py: the
*REST tests on saved_model_half_plus_two_cpu), then bad input, each of which must get TensorFlow
Serving's status and message and leave the server serving.

Run by checks/tests/serve.rs:

    rest_client.py http://127.0.0.1:PORT METADATA_JSON

METADATA_JSON is TensorFlow Serving's expected metadata of the model
(half_plus_two_model_metadata.json in its testdata). Any failed check raises.
"""

import json
import sys
import urllib.error
import urllib.request


def call(url, body=None, raw=None):
    """(HTTP status, parsed JSON answer) of a GET (no body) or POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def expect(url, body, status, answer=None, error=None, raw=None):
    got_status, got = call(url, body, raw)
    assert got_status == status, f"{url}: expected HTTP {status}, got {got_status}: {got}"
    if answer is not None:
        assert got == answer, f"{url}: expected {answer}, got {got}"
    if error is not None:
        assert error in got.get("error", ""), f"{url}: expected '{error}' in {got}"
    print(f"  {got_status} {json.dumps(got)[:160]}")
    return got


def main():
    base, metadata_file = sys.argv[1], sys.argv[2]
    model = f"{base}/v1/models/default"

    print("the suite's REST requests")
    expect(model, None, 200, {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    })
    expect(f"{model}:predict", {"instances": [2.0, 3.0, 4.0]}, 200, {"predictions": [3.0, 3.5, 4.0]})
    expect(f"{model}:predict", {"inputs": [2.0, 3.0, 4.0]}, 200, {"outputs": [3.0, 3.5, 4.0]})
    expect(f"{model}:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, 200,
           {"results": [[["", 3.0]]]})
    expect(f"{model}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, 200,
           {"results": [3.0]})
    with open(metadata_file) as f:
        expected = json.load(f)
    # Whole, TensorInfo names (graph tensors such as "x2:0") included.
    got = expect(f"{model}/metadata", None, 200)
    assert got == expected, f"metadata: expected {expected}, got {got}"

    print("versions and the named input forms")
    expect(f"{model}/versions/123:predict", {"instances": [[1.0]]}, 200, {"predictions": [[2.5]]})
    expect(f"{model}/versions/123", None, 200)
    # version_labels { key: 'stable' value: 123 } in the model config.
    expect(f"{model}/labels/stable:predict", {"instances": [[1.0]]}, 200, {"predictions": [[2.5]]})
    expect(f"{model}/labels/stable/metadata", None, 200)
    expect(f"{model}:predict", {"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0]]}}, 200,
           {"outputs": [[2.5], [3.0]]})
    expect(f"{model}:predict", {"instances": [{"x": [1.0]}, {"x": [2.0]}]}, 200, {"predictions": [[2.5], [3.0]]})
    # Context features reach every example.
    expect(f"{model}:regress", {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}]}, 200,
           {"results": [4.0]})

    print("bad input: TensorFlow Serving's status and message")
    expect(f"{model}:predict", None, 400, error="JSON Parse error", raw=b'{"instances": [2.0, ')
    expect(f"{model}:predict", None, 400, error="JSON Parse error: The document is empty", raw=b"")
    expect(f"{model}:predict", [1.0], 400, error="Is not object")
    expect(f"{model}:predict", {"instances": [1.0], "inputs": [1.0]}, 400,
           error="expecting only one of 'inputs' or 'instances' keys to exist")
    expect(f"{model}:predict", {"instances": []}, 400, error="No values in 'instances' array")
    expect(f"{model}:predict", {"signature_name": 7, "instances": [1.0]}, 400,
           error="'signature_name' key must be a string value.")
    expect(f"{model}:predict", {"x": [1.0]}, 400, error="Missing 'inputs' or 'instances' key")
    expect(f"{model}:predict", {"signature_name": "classify_x_to_y", "instances": [{"b64": "not base64!"}]}, 400,
           error="Unable to base64 decode")
    expect(f"{model}:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": {"b64": "%%"}}]}, 400,
           error="Unable to base64 decode")
    expect(f"{model}:predict", {"signature_name": "nah", "instances": [1.0]}, 400,
           error='Serving signature key "nah" not found.')
    expect(f"{base}/v1/models/nope:predict", {"instances": [1.0]}, 404,
           error="Servable not found for request: Latest(nope)")
    expect(f"{model}/versions/7:predict", {"instances": [1.0]}, 404,
           error="Servable not found for request: Specific(default, 7)")
    expect(f"{model}/labels/canary", None, 400, error="Unrecognized servable version label: canary")
    expect(f"{model}/labels/canary:predict", {"instances": [1.0]}, 400,
           error="Unrecognized servable version label: canary")
    expect(f"{model}:explain", {"instances": [1.0]}, 400, error="Malformed request: POST /v1/models/default:explain")
    expect(f"{base}/v1/models", None, 400, error="Missing model name in request.")
    # A body past the bound is refused before it is read (the server runs with a small
    # --max_request_bytes).
    big = b'{"instances": [' + b"1.0," * 100_000 + b"1.0]}"
    expect(f"{model}:predict", None, 429, error="the request body is over", raw=big)

    print("still serving")
    expect(f"{model}:predict", {"instances": [2.0, 3.0, 4.0]}, 200, {"predictions": [3.0, 3.5, 4.0]})

    print("CORS (--rest_api_enable_cors_support), as TF Serving answers it")
    preflight = urllib.request.Request(f"{model}:predict", method="OPTIONS",
                                       headers={"Origin": "https://example.com"})
    with urllib.request.urlopen(preflight) as response:
        assert response.status == 200, response.status
        assert response.headers["Access-Control-Allow-Origin"] == "*", dict(response.headers)
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
    try:
        urllib.request.urlopen(urllib.request.Request(f"{model}:predict", method="OPTIONS"))
        raise AssertionError("a preflight with no Origin was answered 200")
    except urllib.error.HTTPError as error:
        assert error.code == 400, error.code
        assert error.headers["Access-Control-Allow-Origin"] == "*", "errors carry the headers too"

    print("metrics, scraped over HTTP (--monitoring_config_file)")
    with urllib.request.urlopen(f"{base}/monitoring/prometheus/metrics") as response:
        metrics = response.read().decode()
    lines = metrics.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines, metrics
    ok = [l for l in lines if l.startswith(':tensorflow:serving:request_count{model_name="default",status="OK"} ')]
    assert ok and int(ok[0].split()[-1]) >= 8, metrics
    assert 'tfsandbox_calls_in_flight{model_name="default",version="123"} 0' in lines, metrics
    assert any(l.startswith("tfsandbox_worker_restarts_total{") and l.endswith(" 0") for l in lines), metrics
    assert any(l.startswith(":tensorflow:cc:saved_model:load_attempt_count{") and l.endswith('status="success"} 1')
               for l in lines), metrics


if __name__ == "__main__":
    main()
