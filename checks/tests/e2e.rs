//! End to end: every fixture through a real worker, checked against what TensorFlow computed.

use std::collections::BTreeMap;
use std::time::Duration;

use tfsandbox::{LoadOptions, Predict, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{
    assert_tensor_matches, config, each_runtime, expected, fixture, sandbox, tensor_from_spec,
};

async fn every_fixture_signature_gives_what_tensorflow_gave(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let expected = expected();
    let mut checked = 0;
    for (model_name, signatures) in expected.as_object().unwrap() {
        for (signature, case) in signatures.as_object().unwrap() {
            // A fresh load per case: stateful models were recorded on a fresh load.
            let model = sandbox
                .load_model_with(
                    fixture(model_name),
                    LoadOptions {
                        id: Some(format!("{model_name}.{signature}")),
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("loading {model_name}: {e}"));
            let inputs: Vec<(String, Tensor)> = case["inputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, spec)| (k.clone(), tensor_from_spec(spec)))
                .collect();
            let outputs = model
                .predict_with(Predict::new(inputs).signature(signature))
                .await
                .unwrap_or_else(|e| panic!("{model_name}/{signature}: {e}"));
            let want = case["outputs"].as_object().unwrap();
            assert_eq!(
                outputs.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{model_name}/{signature}: output keys"
            );
            for (key, spec) in want {
                assert_tensor_matches(
                    &outputs[key],
                    spec,
                    &format!("{model_name}/{signature}/{key}"),
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} cases in expected.json");
}

async fn the_cli_prints_half_plus_two(runtime: RuntimeKind) {
    let exe = std::env::current_exe().unwrap();
    let cli = exe.parent().unwrap().parent().unwrap().join("tfsandbox");
    let out = tokio::process::Command::new(&cli)
        .args([
            "run",
            "--runtime",
            &format!("{runtime:?}").to_lowercase(),
            "--model",
        ])
        .arg(fixture("half_plus_two"))
        .args(["--input", "x=[[1.0],[2.0],[5.0]]"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", cli.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"y\":[[2.5],[3.0],[4.5]]}\n"
    );
}

/// Piped into a reader that has gone (`| head`), the CLI ends quietly rather than panicking.
#[tokio::test]
async fn the_cli_ends_quietly_when_its_reader_is_gone() {
    let exe = std::env::current_exe().unwrap();
    let cli = exe.parent().unwrap().parent().unwrap().join("tfsandbox");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(&cli)
        .args(["image", "closure"])
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

async fn variables_keep_their_state_between_calls(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox
        .load_model(fixture("stateful_counter"))
        .await
        .unwrap();
    for want in [5i64, 10, 15] {
        let out = model
            .predict([("increment", Tensor::scalar(5i64))])
            .await
            .unwrap();
        assert_eq!(out["count"].to_vec::<i64>().unwrap(), vec![want]);
    }
    let peek = model
        .predict_with(Predict::new([("unused", Tensor::scalar(0i64))]).signature("peek"))
        .await
        .unwrap();
    assert_eq!(peek["count"].to_vec::<i64>().unwrap(), vec![15]);
}

async fn the_output_filter_returns_only_what_was_asked(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("string_echo")).await.unwrap();
    let text = Tensor::strings(&[2], vec!["ab", "xyz"]).unwrap();
    let out = model
        .predict_with(Predict::new([("text", text)]).outputs(["length"]))
        .await
        .unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), vec!["length"]);
    assert_eq!(out["length"].to_vec::<i32>().unwrap(), vec![2, 3]);
}

async fn byte_strings_that_are_not_utf8_pass_both_ways(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("string_echo")).await.unwrap();
    let raw: Vec<u8> = vec![0xff, b'a', 0x00, 0xc3];
    let out = model
        .predict([("text", Tensor::strings(&[1], vec![raw.clone()]).unwrap())])
        .await
        .unwrap();
    assert_eq!(
        out["upper"].string_values().unwrap()[0].as_ref(),
        &[0xff, b'A', 0x00, 0xc3]
    );
    assert_eq!(out["length"].to_vec::<i32>().unwrap(), vec![4]);
}

async fn metadata_lists_signatures_with_types_and_shapes(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("multi_io")).await.unwrap();
    let names: Vec<&str> = model
        .metadata()
        .signatures
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    // The TF2 init op is not a callable signature and is not listed.
    assert_eq!(names, vec!["serving_default", "sum_only"]);
    let fetched = model.fetch_metadata().await.unwrap();
    assert_eq!(&fetched, model.metadata());
    let default = &fetched.signatures[0];
    let inputs: Vec<(&str, String, &[i64])> = default
        .inputs
        .iter()
        .map(|s| {
            let dtype = tfsandbox_proto::dtype::tensorflow_name(s.tensorflow_dtype);
            (s.name.as_str(), dtype, s.shape.as_slice())
        })
        .collect();
    assert_eq!(
        inputs,
        vec![
            ("a", "DT_FLOAT".to_string(), &[-1i64, 2][..]),
            ("b", "DT_INT64".to_string(), &[-1][..]),
            ("mask", "DT_BOOL".to_string(), &[-1][..]),
            ("pixels", "DT_UINT8".to_string(), &[-1, 3][..])
        ]
    );
}

async fn unloaded_models_are_gone_and_info_says_so(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let first = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let second = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(
        (first.id(), second.id()),
        ("half_plus_two", "half_plus_two-2")
    );
    let info = sandbox.info().await.unwrap();
    assert_eq!(info.loaded_models, vec!["half_plus_two", "half_plus_two-2"]);
    assert!(
        info.tensorflow_version.starts_with("2."),
        "{}",
        info.tensorflow_version
    );
    assert_ne!(info.pid, std::process::id());

    let kept = first.clone();
    first.unload().await.unwrap();
    let error = kept
        .predict([("x", Tensor::new(&[1, 1], &[1.0f32]).unwrap())])
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|s| s.code()),
        Some(tonic::Code::NotFound),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("no model with id 'half_plus_two'"),
        "{error}"
    );
    assert_eq!(
        sandbox.info().await.unwrap().loaded_models,
        vec!["half_plus_two-2"]
    );
}

async fn thirty_two_concurrent_predicts_on_one_worker_are_all_right(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let calls = (0..32).map(|i| {
        let model = model.clone();
        async move {
            let xs: Vec<f32> = (0..100).map(|j| (i * 100 + j) as f32).collect();
            let out = model
                .predict([("x", Tensor::new(&[100, 1], &xs).unwrap())])
                .await
                .unwrap();
            let want: Vec<f32> = xs.iter().map(|x| 0.5 * x + 2.0).collect();
            assert_eq!(out["y"].to_vec::<f32>().unwrap(), want, "call {i}");
        }
    });
    futures::future::join_all(calls).await;
}

async fn a_model_printing_to_stdout_does_not_disturb_the_protocol(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("noisy")).await.unwrap();
    for _ in 0..3 {
        let out = model
            .predict([("x", Tensor::new(&[2], &[1.0f32, 2.0]).unwrap())])
            .await
            .unwrap();
        assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    }
}

/// Many large tensors in both directions at once: both sides' windows fill up together, the case
/// where a multiplexer that stops reading while it cannot write deadlocks.
async fn large_tensors_both_ways_at_once_do_not_stall(runtime: RuntimeKind) {
    let sandbox = sandbox(runtime).await;
    let model = sandbox.load_model(fixture("identity")).await.unwrap();
    let len = 4 * 1024 * 1024; // 16 MiB of float32 each way, per call
    let calls = (0..8).map(|i| {
        let model = model.clone();
        async move {
            let xs: Vec<f32> = (0..len).map(|j| (j % 1000) as f32 + i as f32).collect();
            let out = model
                .predict([("x", Tensor::new(&[len], &xs).unwrap())])
                .await
                .unwrap();
            assert!(
                out["y"].to_vec::<f32>().unwrap() == xs,
                "call {i} came back different"
            );
        }
    });
    tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(calls))
        .await
        .expect("eight 16 MiB round trips finish");
    let info: BTreeMap<_, _> = [("loaded", sandbox.info().await.unwrap().loaded_models)].into();
    assert_eq!(info["loaded"], vec!["identity"]);
}

async fn the_message_limit_reaches_the_worker(runtime: RuntimeKind) {
    let mut config = config(runtime);
    config.max_message_bytes = 123_456_789;
    let sandbox = Sandbox::start(config).await.unwrap();
    assert_eq!(sandbox.info().await.unwrap().max_message_bytes, 123_456_789);
    sandbox.shutdown().await;
}

/// A model below a folder only its owner may enter (0700, as `mktemp -d` and many home folders
/// are), with files of the usual modes, loads: as TensorFlow Serving's own suite writes its models.
async fn a_model_below_a_private_folder_loads(runtime: RuntimeKind) {
    use std::os::unix::fs::PermissionsExt;
    let private = tempfile::Builder::new()
        .prefix("tfsandbox-0700-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let model_dir = private.path().join("half_plus_two");
    tfsandbox_checks::copy_dir(&fixture("half_plus_two"), &model_dir);
    let mut config = config(runtime);
    config.models = vec![model_dir.clone()];
    let sandbox = Sandbox::start(config).await.unwrap();
    let model = sandbox
        .load_model(&model_dir)
        .await
        .unwrap_or_else(|e| panic!("the model below a 0700 folder loads: {e}"));
    let outputs = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(outputs["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    sandbox.shutdown().await;
}

/// The threads of the worker process once `half_plus_two` is loaded and called, with the
/// sandbox's session threads at `threads`.
async fn worker_threads_with(threads: (u32, u32)) -> usize {
    let mut config = config(RuntimeKind::Process);
    config.session = tfsandbox::SessionConfig {
        intra_op_threads: threads.0,
        inter_op_threads: threads.1,
        ..Default::default()
    };
    let sandbox = Sandbox::start(config).await.unwrap();
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    let pid = tfsandbox_checks::worker_host_pid(&sandbox).expect("the worker's host pid");
    let count = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    sandbox.shutdown().await;
    count
}

/// `Config::session`'s threads size the worker's TensorFlow thread pools (serve's
/// `--tensorflow_*_parallelism`): the worker has that many more threads.
#[tokio::test]
async fn session_thread_pools_are_sized_as_asked() {
    let few = worker_threads_with((1, 1)).await;
    let many = worker_threads_with((12, 12)).await;
    eprintln!("worker threads: {few} with (1, 1), {many} with (12, 12)");
    assert!(
        many >= few + 16,
        "{many} threads with 12 intra-op and 12 inter-op, {few} with 1 and 1"
    );
}

each_runtime!(
    a_model_below_a_private_folder_loads,
    the_message_limit_reaches_the_worker,
    every_fixture_signature_gives_what_tensorflow_gave,
    the_cli_prints_half_plus_two,
    variables_keep_their_state_between_calls,
    the_output_filter_returns_only_what_was_asked,
    byte_strings_that_are_not_utf8_pass_both_ways,
    metadata_lists_signatures_with_types_and_shapes,
    unloaded_models_are_gone_and_info_says_so,
    thirty_two_concurrent_predicts_on_one_worker_are_all_right,
    a_model_printing_to_stdout_does_not_disturb_the_protocol,
    large_tensors_both_ways_at_once_do_not_stall,
);
