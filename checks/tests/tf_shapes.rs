//! TensorFlow Serving's own test models are served with its shape rules: a request's shape is
//! not checked against the signature (TensorFlow decides at run time), so TF1 models that declare
//! no shape, or `[-1, 1]` where `[1]` runs, answer as they do under TF Serving.

use std::path::PathBuf;

use tfsandbox::{RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, each_runtime};

/// TF Serving's test models, used in place (`TFSANDBOX_TFSERVING_TESTDATA`, or
/// `../shared/tfserving-testdata` beside the checkout).
fn tfserving_model(name: &str) -> PathBuf {
    let root = std::env::var_os("TFSANDBOX_TFSERVING_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tfserving-testdata")
        });
    let dir = root.join(name);
    assert!(
        dir.is_dir(),
        "TF Serving's test model {} is missing; set TFSANDBOX_TFSERVING_TESTDATA to the folder of \
         tensorflow_serving/servables/tensorflow/testdata",
        dir.display()
    );
    // Mounts are matched by path, so `..` must go.
    dir.canonicalize().unwrap()
}

async fn tf1_model_without_shapes_takes_any_rank(runtime: RuntimeKind) {
    let dir = tfserving_model("saved_model_half_plus_three/00000123");
    let sandbox = Sandbox::start(config(runtime).with_model(&dir))
        .await
        .unwrap();
    let model = sandbox.load_model(&dir).await.unwrap();
    // The request of TF Serving's testPredictSavedModel (half_plus_three: y = x / 2 + 3).
    let x = Tensor::new(&[3, 1], &[1.0f32, 2.0, 5.0]).unwrap();
    let out = model.predict([("x", x)]).await.unwrap();
    assert_eq!(out["y"].shape(), vec![3, 1]);
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.5, 4.0, 5.5]);
}

async fn rank_one_input_to_a_batch_placeholder_is_served(runtime: RuntimeKind) {
    let dir = tfserving_model("saved_model_half_plus_two_cpu/00000123");
    let sandbox = Sandbox::start(config(runtime).with_model(&dir))
        .await
        .unwrap();
    let model = sandbox.load_model(&dir).await.unwrap();
    // x is declared [-1, 1]; TF Serving's clients send [1], which TensorFlow runs.
    let out = model
        .predict([("x", Tensor::new(&[1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
}

each_runtime!(
    tf1_model_without_shapes_takes_any_rank,
    rank_one_input_to_a_batch_placeholder_is_served,
);
