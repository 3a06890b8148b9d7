//! Bad input of every kind ends in a clear error naming what was wrong; the worker stays usable.

use std::collections::HashMap;

use bytes::Bytes;
use tfsandbox::{Error, Predict, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, each_runtime, fixture, fixture_inside, raw_worker, sandbox};
use tfsandbox_proto::v1::{DataType, LoadModelRequest, PredictRequest, Tensor as WireTensor};
use tonic::Code;

fn x(values: &[f32]) -> Tensor {
    Tensor::new(&[values.len(), 1], values).unwrap()
}

/// The error's text must contain every fragment; its gRPC code, where there is one, must match.
fn assert_error(error: &Error, code: Option<Code>, fragments: &[&str]) {
    let text = error.to_string();
    for fragment in fragments {
        assert!(text.contains(fragment), "error lacks '{fragment}': {text}");
    }
    if let Some(code) = code {
        assert_eq!(error.status().map(|s| s.code()), Some(code), "{text}");
    }
}

async fn model_directories_that_are_missing_empty_or_corrupt(runtime: RuntimeKind) {
    // Made before the sandbox starts: a runtime with its own file system mounts it then.
    let empty = std::env::temp_dir().join(format!(
        "tfsandbox-empty-{}-{runtime:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&empty).unwrap();
    let sandbox = Sandbox::start(config(runtime).with_model(&empty))
        .await
        .unwrap();

    let missing = sandbox
        .load_model(fixture("no_such_model"))
        .await
        .err()
        .unwrap();
    assert!(matches!(missing, Error::ModelPath { .. }), "{missing}");
    assert_error(&missing, None, &["no_such_model", "No such file"]);

    let error = sandbox.load_model(&empty).await.err().unwrap();
    assert_error(&error, Some(Code::InvalidArgument), &["no saved_model.pb"]);

    std::fs::write(empty.join("saved_model.pb"), b"this is not a protobuf").unwrap();
    let error = sandbox.load_model(&empty).await.err().unwrap();
    assert_error(&error, None, &["loading model from", "tfsandbox-empty"]);
    std::fs::remove_dir_all(&empty).unwrap();

    let error = sandbox
        .load_model_with(
            fixture("half_plus_two"),
            tfsandbox::LoadOptions {
                tags: vec!["gpu".into()],
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap();
    assert_error(&error, None, &["loading model from", "gpu"]);

    // After all that the worker still serves.
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    model.predict([("x", x(&[2.0]))]).await.unwrap();
}

async fn unknown_signature_lists_the_real_ones(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let error = model
        .predict_with(Predict::new([("x", x(&[1.0]))]).signature("nope"))
        .await
        .unwrap_err();
    assert_error(
        &error,
        Some(Code::NotFound),
        &["no signature 'nope'", "half, serving_default, x_to_y2"],
    );
}

async fn missing_extra_mistyped_and_misshapen_inputs(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("multi_io")).await.unwrap();
    let sum_only = |inputs: Vec<(&str, Tensor)>| {
        model.predict_with(Predict::new(inputs).signature("sum_only"))
    };

    let error = sum_only(vec![]).await.unwrap_err();
    assert_error(
        &error,
        Some(Code::InvalidArgument),
        &["missing input 'a'", "signature 'sum_only'"],
    );

    let a = Tensor::new(&[1, 2], &[1.0f32, 2.0]).unwrap();
    let error = sum_only(vec![("a", a.clone()), ("b", Tensor::scalar(1i64))])
        .await
        .unwrap_err();
    assert_error(
        &error,
        Some(Code::InvalidArgument),
        &["unknown input 'b'", "the inputs are: a"],
    );

    let error = sum_only(vec![("a", Tensor::new(&[1, 2], &[1.0f64, 2.0]).unwrap())])
        .await
        .unwrap_err();
    assert_error(
        &error,
        Some(Code::InvalidArgument),
        &[
            "input 'a'",
            "DATA_TYPE_FLOAT64",
            "expected DATA_TYPE_FLOAT32",
        ],
    );

    // A shape the signature does not declare goes to TensorFlow, as in TF Serving: the run refuses
    // what its ops cannot take, and serves what they can.
    let error = sum_only(vec![("a", Tensor::new(&[2], &[1.0f32, 2.0]).unwrap())])
        .await
        .unwrap_err();
    assert_error(
        &error,
        Some(Code::InvalidArgument),
        &["signature 'sum_only'", "reduction dimension"],
    );
    let out = sum_only(vec![(
        "a",
        Tensor::new(&[1, 3], &[1.0f32, 2.0, 3.0]).unwrap(),
    )])
    .await
    .unwrap();
    assert_eq!(out["row_sum"].to_vec::<f64>().unwrap(), vec![6.0]);

    let error = model
        .predict_with(
            Predict::new([("a", a.clone())])
                .signature("sum_only")
                .outputs(["nope"]),
        )
        .await
        .unwrap_err();
    assert_error(
        &error,
        Some(Code::InvalidArgument),
        &["unknown output 'nope'", "row_sum"],
    );

    // The same worker still answers correctly.
    let out = sum_only(vec![("a", a)]).await.unwrap();
    assert_eq!(out["row_sum"].to_vec::<f64>().unwrap(), vec![3.0]);
}

/// Requests the library never builds, sent with the bare client.
#[tokio::test]
async fn malformed_wire_tensors_and_ids() {
    let (mut client, _control) = raw_worker().await;
    let load = |id: &str| LoadModelRequest {
        path: fixture_inside("half_plus_two"),
        tags: vec![],
        model_id: id.into(),
        ..Default::default()
    };
    client.load_model(load("m")).await.unwrap();
    let status = client.load_model(load("m")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let status = client.load_model(load("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let predict = |tensor: WireTensor, model: &str| PredictRequest {
        model_id: model.into(),
        signature_name: String::new(),
        inputs: HashMap::from([("x".to_string(), tensor)]),
        output_filter: vec![],
    };
    let floats = |shape: Vec<i64>, bytes: usize| WireTensor {
        dtype: DataType::Float32 as i32,
        shape,
        content: Bytes::from(vec![0u8; bytes]),
        string_values: vec![],
    };
    let cases = [
        (
            predict(floats(vec![2, 1], 7), "m"),
            Code::InvalidArgument,
            "content has 7 bytes, but shape [2, 1] of 4-byte elements needs 8",
        ),
        (
            predict(floats(vec![-1, 1], 0), "m"),
            Code::InvalidArgument,
            "negative dimension -1",
        ),
        (
            predict(floats(vec![i64::MAX, 1], 8), "m"),
            Code::InvalidArgument,
            "too many elements",
        ),
        (
            predict(
                WireTensor {
                    dtype: 42,
                    ..floats(vec![1, 1], 4)
                },
                "m",
            ),
            Code::InvalidArgument,
            "unknown dtype 42",
        ),
        (
            predict(floats(vec![1, 1], 4), "nope"),
            Code::NotFound,
            "no model with id 'nope'",
        ),
    ];
    for (request, code, fragment) in cases {
        let status = client.predict(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(fragment),
            "'{fragment}' not in: {}",
            status.message()
        );
    }
    // A correct call on the same connection still works.
    let ok = client
        .predict(predict(floats(vec![1, 1], 4), "m"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outputs["y"].content.as_ref(), 2.0f32.to_le_bytes());
}

#[tokio::test]
async fn bool_bytes_other_than_zero_or_one_are_refused() {
    let (mut client, _control) = raw_worker().await;
    client
        .load_model(LoadModelRequest {
            path: fixture_inside("multi_io"),
            tags: vec![],
            model_id: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = |dtype: DataType, shape: Vec<i64>, content: Vec<u8>| WireTensor {
        dtype: dtype as i32,
        shape,
        content: content.into(),
        string_values: vec![],
    };
    let inputs = HashMap::from([
        (
            "a".to_string(),
            t(DataType::Float32, vec![1, 2], vec![0; 8]),
        ),
        ("b".to_string(), t(DataType::Int64, vec![1], vec![0; 8])),
        ("mask".to_string(), t(DataType::Bool, vec![1], vec![7])),
        (
            "pixels".to_string(),
            t(DataType::Uint8, vec![1, 3], vec![0; 3]),
        ),
    ]);
    let status = client
        .predict(PredictRequest {
            model_id: "m".into(),
            signature_name: String::new(),
            inputs,
            output_filter: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("input 'mask': bool element 0 is 7"),
        "{}",
        status.message()
    );
}

each_runtime!(
    model_directories_that_are_missing_empty_or_corrupt,
    unknown_signature_lists_the_real_ones,
    missing_extra_mistyped_and_misshapen_inputs,
);
