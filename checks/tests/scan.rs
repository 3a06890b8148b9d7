//! `tfsandbox scan` and the op policy: the catalogue against the shipped registry, what the scan
//! finds in every fixture (hostile ones, nested functions, path provenance), hostile
//! saved_model.pb files, and denied models refused at load by real workers.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use tfsandbox::scan::tf::{
    attr_value, tensor_info, AttrValue, FunctionDefLibrary, GraphDef, MetaGraphDef, NodeDef,
    SavedModel, SaverDef, TensorProto,
};
use tfsandbox::scan::{self, Capability, Catalogue, ScanError, ScanLimits};
use tfsandbox::{Config, OpPolicy, RuntimeKind, Tensor};
use tfsandbox_checks::{config, copy_dir, each_runtime, fixture, fixture_dirs};

fn scan_fixture(name: &str) -> scan::Report {
    scan::scan_dir(&fixture(name), &[], &ScanLimits::default())
        .unwrap_or_else(|e| panic!("scan {name}: {e}"))
}

fn capabilities(report: &scan::Report) -> BTreeSet<Capability> {
    report.capabilities()
}

#[test]
fn the_catalogue_classifies_every_op_of_the_shipped_registry() {
    let oplist = config(RuntimeKind::Process)
        .resolve_worker_path()
        .expect("the worker is built")
        .with_file_name("tfsandbox-oplist");
    let out = Command::new(&oplist)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", oplist.display()));
    assert!(out.status.success(), "tfsandbox-oplist: {:?}", out.status);
    let registry: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert!(registry.len() > 1000, "only {} ops listed", registry.len());
    let table: BTreeSet<String> = Catalogue::shipped().op_names().map(String::from).collect();
    let unclassified: Vec<_> = registry.difference(&table).collect();
    assert!(
        unclassified.is_empty(),
        "ops in libtensorflow's registry that scan/src/ops.tsv does not classify: {unclassified:?}"
    );
    let stale: Vec<_> = table.difference(&registry).collect();
    assert!(
        stale.is_empty(),
        "ops in scan/src/ops.tsv that the registry lacks: {stale:?}"
    );
}

#[test]
fn every_hostile_fixture_is_flagged_for_its_capability() {
    let want: &[(&str, &[Capability], &str)] = &[
        ("read_file", &[Capability::FileRead], "ReadFile"),
        ("write_file", &[Capability::FileWrite], "WriteFile"),
        ("list_files", &[Capability::FileList], "MatchingFiles"),
        ("memory_bomb", &[Capability::Alloc], "Fill"),
        ("one_long_op", &[Capability::Alloc], "Fill"),
        ("nested_read", &[Capability::FileRead], "ReadFile"),
    ];
    for (name, caps, op) in want {
        let report = scan_fixture(&format!("hostile/{name}"));
        assert_eq!(
            capabilities(&report),
            caps.iter().copied().collect(),
            "hostile/{name}:\n{}",
            report.render()
        );
        assert!(
            report.findings.iter().any(|f| f.op == *op
                && f.function.is_some()
                && f.reached_from == ["serving_default"]),
            "hostile/{name}: no {op} reached from serving_default:\n{}",
            report.render()
        );
    }
    // CPU time is not a capability: endless_loop is a While loop like busy_loop, which
    // deadlines stop (README, failure model).
    assert_eq!(
        capabilities(&scan_fixture("hostile/endless_loop")),
        BTreeSet::new()
    );
}

#[test]
fn benign_models_are_flagged_for_nothing() {
    let mut scanned = 0;
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let report = scan_fixture(&name);
        let want: BTreeSet<Capability> = if name == "noisy" {
            // It prints on purpose: tf.print to stdout.
            [Capability::Print].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(capabilities(&report), want, "{name}:\n{}", report.render());
        scanned += 1;
    }
    assert!(scanned >= 8, "only {scanned} fixtures");
}

/// TensorFlow Serving's own test models (TF1 and TF2 exports, assets, a counter), used in place
/// from `shared/tfserving-testdata` beside the repository.
#[test]
fn tensorflow_servings_test_models_are_flagged_for_nothing() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tfserving-testdata");
    let mut versions = 0;
    let models = std::fs::read_dir(&testdata).unwrap_or_else(|e| {
        panic!(
            "TensorFlow Serving's testdata at {}: {e}",
            testdata.display()
        )
    });
    for model in models {
        let model = model.unwrap().path();
        let Ok(entries) = std::fs::read_dir(&model) else {
            continue;
        };
        for version in entries {
            let version = version.unwrap().path();
            if !version.join("saved_model.pb").is_file() {
                continue;
            }
            let report = scan::scan_dir(&version, &[], &ScanLimits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", version.display()));
            assert_eq!(
                capabilities(&report),
                BTreeSet::new(),
                "{}:\n{}",
                version.display(),
                report.render()
            );
            assert!(OpPolicy::serve_default().check(&report).is_ok());
            versions += 1;
        }
    }
    assert!(versions >= 8, "only {versions} TF Serving versions scanned");
}

#[test]
fn a_capability_hidden_in_nested_functions_is_found() {
    let report = scan_fixture("hostile/nested_read");
    let read = report
        .findings
        .iter()
        .find(|f| f.op == "ReadFile" && f.reached_from == ["serving_default"])
        .unwrap_or_else(|| panic!("no ReadFile:\n{}", report.render()));
    let function = read.function.clone().unwrap();
    // The signature's own function (the one its PartitionedCall names) holds no ReadFile: the
    // scan followed the While body, the If branch and the inner call to reach it.
    assert!(
        function.contains("read_inner"),
        "ReadFile found in {function}, expected the inner tf.function"
    );
    let model =
        scan::read_saved_model(&fixture("hostile/nested_read"), &ScanLimits::default()).unwrap();
    let graph = model.meta_graphs[0].graph_def.as_ref().unwrap();
    assert!(graph.node.iter().all(|n| n.op != "ReadFile"));
    let library = graph.library.as_ref().unwrap();
    let holders: Vec<_> = library
        .function
        .iter()
        .filter(|f| f.node_def.iter().any(|n| n.op == "ReadFile"))
        .map(|f| f.signature.as_ref().unwrap().name.clone())
        .collect();
    assert!(
        holders.iter().all(|h| h.contains("read_inner")),
        "{holders:?}"
    );
    let denied = OpPolicy::parse("file_read")
        .unwrap()
        .check(&report)
        .unwrap_err()
        .to_string();
    assert!(
        denied.contains("op 'ReadFile'") && denied.contains(&format!("function '{function}'")),
        "{denied}"
    );
}

fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn string_const(name: &str, value: &str) -> NodeDef {
    let mut n = node(name, "Const", &[]);
    n.attr.insert(
        "value".into(),
        AttrValue {
            value: Some(attr_value::Value::Tensor(TensorProto {
                dtype: 7,
                string_val: vec![value.as_bytes().to_vec()],
            })),
        },
    );
    n
}

/// A one-graph SavedModel whose restore reads the prefix `path_node` computes.
fn restore_model(nodes: Vec<NodeDef>, saver_filename: Option<&str>) -> SavedModel {
    let mut all = nodes;
    all.push(string_const("names", "v"));
    all.push(string_const("slices", ""));
    all.push(node("restore", "RestoreV2", &["prefix", "names", "slices"]));
    SavedModel {
        saved_model_schema_version: 1,
        meta_graphs: vec![MetaGraphDef {
            meta_info_def: Some(tfsandbox::scan::tf::meta_graph_def::MetaInfoDef {
                tags: vec!["serve".into()],
                ..Default::default()
            }),
            graph_def: Some(GraphDef {
                node: all,
                library: Some(FunctionDefLibrary::default()),
            }),
            saver_def: saver_filename.map(|f| SaverDef {
                filename_tensor_name: f.into(),
                restore_op_name: "restore".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

fn restore_flags(model: &SavedModel) -> BTreeSet<Capability> {
    scan::scan(model, &[], &ScanLimits::default())
        .unwrap()
        .capabilities()
}

#[test]
fn restore_paths_are_flagged_unless_they_are_the_models_own() {
    let own = || node("saver_filename", "Placeholder", &[]);
    // The loader's own feed, directly and joined with a relative suffix: not flagged.
    let m = restore_model(
        vec![own(), node("prefix", "Identity", &["saver_filename"])],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), BTreeSet::new());
    let m = restore_model(
        vec![
            own(),
            string_const("suffix", "_temp/part"),
            node("prefix", "StringJoin", &["saver_filename", "suffix"]),
        ],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), BTreeSet::new());
    let file_read: BTreeSet<_> = [Capability::FileRead].into();
    // A placeholder that is not the saver's: any caller-fed path.
    let m = restore_model(
        vec![node("prefix", "Placeholder", &[])],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), file_read);
    // An absolute constant, and a suffix that climbs out of the model.
    let m = restore_model(
        vec![string_const("prefix", "/etc/secrets/ckpt")],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), file_read);
    let m = restore_model(
        vec![
            own(),
            string_const("suffix", "/../../../../etc/ckpt"),
            node("prefix", "StringJoin", &["saver_filename", "suffix"]),
        ],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), file_read);
    // A computed path (here: read from a file) is not the model's own either.
    let m = restore_model(
        vec![
            string_const("where", "x"),
            node("prefix", "ReadFile", &["where"]),
        ],
        Some("saver_filename:0"),
    );
    assert_eq!(restore_flags(&m), file_read);
}

#[test]
fn an_op_outside_the_registry_is_unknown() {
    let mut m = restore_model(vec![node("prefix", "Placeholder", &[])], None);
    let graph = m.meta_graphs[0].graph_def.as_mut().unwrap();
    graph
        .node
        .push(node("custom", "MyCustomKernel", &["prefix"]));
    let report = scan::scan(&m, &[], &ScanLimits::default()).unwrap();
    let unknown: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.capability == Capability::UnknownOp)
        .collect();
    assert_eq!(unknown.len(), 1, "{}", report.render());
    assert_eq!(unknown[0].op, "MyCustomKernel");
    // A signature output of a tensor_info name is traced back to it.
    m.meta_graphs[0].signature_def.insert(
        "serving_default".into(),
        tfsandbox::scan::tf::SignatureDef {
            outputs: HashMap::from([(
                "y".to_string(),
                tfsandbox::scan::tf::TensorInfo {
                    encoding: Some(tensor_info::Encoding::Name("custom:0".into())),
                },
            )]),
            ..Default::default()
        },
    );
    let report = scan::scan(&m, &[], &ScanLimits::default()).unwrap();
    let custom = report
        .findings
        .iter()
        .find(|f| f.op == "MyCustomKernel")
        .unwrap();
    assert_eq!(custom.reached_from, ["serving_default"]);
}

fn model_dir_with(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("saved_model.pb"), bytes).unwrap();
    dir
}

#[test]
fn corrupt_or_huge_saved_models_are_refused_cleanly() {
    let limits = ScanLimits::default();
    let real = std::fs::read(fixture("half_plus_two/saved_model.pb")).unwrap();
    // Garbage, a truncated file, a length prefix claiming 1 GiB in a 16-byte file.
    let mut claims_a_gib = vec![0x12, 0x80, 0x80, 0x80, 0x80, 0x04];
    claims_a_gib.extend_from_slice(&[0u8; 10]);
    for (what, bytes) in [
        ("garbage", vec![0xffu8; 64]),
        ("truncated", real[..real.len() / 2].to_vec()),
        ("a huge length prefix", claims_a_gib),
    ] {
        let dir = model_dir_with(&bytes);
        match scan::scan_dir(dir.path(), &[], &limits) {
            Err(ScanError::Decode { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    // Nesting 10000 deep (AttrValue -> NameAttrList -> AttrValue ...): prost's recursion limit.
    let mut nested: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        // AttrValue.func (10) { NameAttrList.attr (2) { key "a", value (2) <nested> } }
        let mut entry = vec![0x0a, 0x01, b'a', 0x12];
        put_len(&mut entry, nested.len());
        entry.extend_from_slice(&nested);
        let mut name_attr = vec![0x12];
        put_len(&mut name_attr, entry.len());
        name_attr.extend_from_slice(&entry);
        nested = vec![0x52];
        put_len(&mut nested, name_attr.len());
        nested.extend_from_slice(&name_attr);
    }
    let err = scan::decode_saved_model(&wrap_attr(&nested)).unwrap_err();
    assert!(err.to_string().contains("recursion"), "{err}");
    // Over the size limit: refused from its length, before reading (a sparse 2 GiB file).
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("saved_model.pb")).unwrap();
    file.set_len(2 << 30).unwrap();
    match scan::scan_dir(dir.path(), &[], &limits) {
        Err(e @ ScanError::TooLarge { .. }) => {
            assert!(e.to_string().contains("over the scan's limit"), "{e}")
        }
        other => panic!("2 GiB: {other:?}"),
    }
    // A second form TensorFlow's loader might read instead (text, or chunked).
    for other in ["saved_model.pbtxt", "saved_model.cpb"] {
        let dir = model_dir_with(&real);
        std::fs::write(dir.path().join(other), b"").unwrap();
        assert!(
            matches!(
                scan::scan_dir(dir.path(), &[], &limits),
                Err(ScanError::OtherForm { .. })
            ),
            "{other}"
        );
    }
    // No saved_model.pb, and a meta graph with other tags.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        scan::scan_dir(empty.path(), &[], &limits),
        Err(ScanError::NoSavedModel { .. })
    ));
    assert!(matches!(
        scan::scan_dir(&fixture("half_plus_two"), &["train".into()], &limits),
        Err(ScanError::NoMetaGraph { .. })
    ));
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// SavedModel { meta_graphs { graph_def { node { attr { key "f" value <attr> } } } } }
fn wrap_attr(attr: &[u8]) -> Vec<u8> {
    let field = |tag: u8, body: &[u8]| {
        let mut out = vec![tag];
        put_len(&mut out, body.len());
        out.extend_from_slice(body);
        out
    };
    let mut entry = vec![0x0a, 0x01, b'f'];
    entry.extend(field(0x12, attr));
    let node = field(0x2a, &entry);
    let graph = field(0x0a, &node);
    let meta = field(0x12, &graph);
    field(0x12, &meta)
}

async fn a_denied_model_is_refused_at_load(runtime: RuntimeKind) {
    // A corrupt saved_model.pb: refused by the worker's scan, not handed to TensorFlow.
    let corrupt = model_dir_with(&[0xff; 64]);
    let config = Config {
        op_policy: OpPolicy::parse("file_read,network").unwrap(),
        ..config(runtime)
    }
    .with_model(fixture("hostile/read_file"))
    .with_model(fixture("hostile/nested_read"))
    .with_model(corrupt.path());
    let sandbox = tfsandbox::Sandbox::start(config)
        .await
        .expect("sandbox starts");
    let Err(err) = sandbox.load_model(corrupt.path()).await else {
        panic!("a corrupt saved_model.pb was loaded");
    };
    assert!(
        err.to_string().contains("scanning it for the op policy")
            && err
                .to_string()
                .contains("is not a valid SavedModel protobuf"),
        "{err}"
    );
    for name in ["read_file", "nested_read"] {
        let Err(err) = sandbox
            .load_model(fixture(&format!("hostile/{name}")))
            .await
        else {
            panic!("{name}: a model that reads files was loaded");
        };
        let message = err.to_string();
        assert!(
            message.contains("the op policy denies file_read: op 'ReadFile', node 'ReadFile' in function '__inference_"),
            "{name}: {message}"
        );
    }
    // Nothing of them was loaded; an allowed model loads and runs in the same worker.
    let info = sandbox.info().await.unwrap();
    assert!(info.loaded_models.is_empty(), "{:?}", info.loaded_models);
    let model = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let out = model
        .predict([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    sandbox.shutdown().await;
}

async fn a_loaded_model_reports_what_its_ops_can_do(runtime: RuntimeKind) {
    // No policy: the worker still scans, and says what it found, as the host's own scan does.
    let config = config(runtime).with_model(fixture("hostile/memory_bomb"));
    let mut events = config.events.subscribe();
    let sandbox = tfsandbox::Sandbox::start(config)
        .await
        .expect("sandbox starts");
    let bomb = sandbox
        .load_model(fixture("hostile/memory_bomb"))
        .await
        .unwrap();
    let expected: Vec<Capability> = capabilities(&scan_fixture("hostile/memory_bomb"))
        .into_iter()
        .collect();
    assert!(expected.contains(&Capability::Alloc), "{expected:?}");
    assert_eq!(bomb.capabilities(), Some(&expected[..]));
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(half.capabilities(), Some(&[][..]));
    // The load event carries them too.
    let names: Vec<&str> = expected.iter().map(|c| c.name()).collect();
    loop {
        if let tfsandbox::Event::ModelLoaded { capabilities, .. } = events.recv().await.unwrap() {
            assert_eq!(capabilities, Some(names));
            break;
        }
    }
    sandbox.shutdown().await;
}

each_runtime!(
    a_denied_model_is_refused_at_load,
    a_loaded_model_reports_what_its_ops_can_do
);

/// `tfsandbox serve` with its default policy: a new version that reads files is END with the
/// policy's error in GetModelStatus, and the version before keeps serving.
#[tokio::test]
async fn serve_refuses_a_denied_version_and_keeps_serving_the_one_before() {
    use std::io::{BufRead, BufReader};
    use tfsandbox_serve::proto::serving::model_service_client::ModelServiceClient;
    use tfsandbox_serve::proto::serving::prediction_service_client::PredictionServiceClient;
    use tfsandbox_serve::proto::serving::{GetModelStatusRequest, ModelSpec, PredictRequest};
    use tfsandbox_serve::proto::{
        tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto,
    };

    let base = tempfile::tempdir().unwrap();
    copy_dir(&fixture("half_plus_two"), &base.path().join("m/1"));
    let tfsandbox = tfsandbox_checks::tfsandbox();
    let mut child = Command::new(&tfsandbox)
        .args([
            "serve",
            "--port",
            "0",
            "--model_name",
            "m",
            "--model_base_path",
        ])
        .arg(base.path().join("m"))
        .args(["--file_system_poll_wait_seconds", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tfsandbox serve");
    let stdout = child.stdout.take().unwrap();
    let address = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
    })
    .await
    .unwrap();
    let Some(address) = address else {
        let _ = child.kill();
        panic!(
            "tfsandbox serve did not start listening: {:?}",
            child.wait()
        );
    };
    // Version 2 is written elsewhere and renamed into place, as TensorFlow Serving asks.
    copy_dir(&fixture("hostile/read_file"), &base.path().join("staging"));
    std::fs::rename(base.path().join("staging"), base.path().join("m/2")).unwrap();
    let endpoint = format!("http://{address}");
    let spec = || ModelSpec {
        name: "m".into(),
        ..Default::default()
    };
    let mut models = ModelServiceClient::connect(endpoint.clone()).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..120 {
        statuses = models
            .get_model_status(GetModelStatusRequest {
                model_spec: Some(spec()),
            })
            .await
            .unwrap()
            .into_inner()
            .model_version_status;
        if statuses.iter().any(|s| s.version == 2 && s.state == 50) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let mut predict = PredictionServiceClient::connect(endpoint).await.unwrap();
    let dim = |size| Dim {
        size,
        ..Default::default()
    };
    let answer = predict
        .predict(PredictRequest {
            model_spec: Some(spec()),
            inputs: [(
                "x".to_string(),
                TensorProto {
                    dtype: DataType::DtFloat as i32,
                    tensor_shape: Some(TensorShapeProto {
                        dim: vec![dim(1), dim(1)],
                        ..Default::default()
                    }),
                    float_val: vec![4.0],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let v2 = statuses
        .iter()
        .find(|s| s.version == 2)
        .unwrap_or_else(|| panic!("no version 2: {statuses:?}"));
    assert_eq!(v2.state, 50, "version 2: {v2:?}");
    let message = &v2.status.as_ref().unwrap().error_message;
    assert!(
        message
            .contains("the op policy denies file_read: op 'ReadFile', node 'ReadFile' in function"),
        "{message}"
    );
    let v1 = statuses.iter().find(|s| s.version == 1).unwrap();
    assert_eq!(v1.state, 30, "version 1: {v1:?}");
    let answer = answer.expect("version 1 answers").into_inner();
    let y = &answer.outputs["y"];
    assert!(
        y.float_val == [4.0] || y.tensor_content[..] == 4.0f32.to_le_bytes(),
        "{y:?}"
    );
}

/// TF2's asset pattern: the loader feeds `asset_path_initializer`, the init op assigns it to a
/// variable, a table initialiser reads the variable. Not flagged; a second assignment from an
/// absolute path, or an alias of the variable by shared_name, is.
#[test]
fn table_initialisers_reading_the_models_own_assets_are_not_flagged() {
    let shared = |mut n: NodeDef, name: &str| {
        n.attr.insert(
            "shared_name".into(),
            AttrValue {
                value: Some(attr_value::Value::S(name.as_bytes().to_vec())),
            },
        );
        n
    };
    let model = |extra: Vec<NodeDef>| {
        let mut nodes = vec![
            node("asset_path_initializer", "Placeholder", &[]),
            shared(node("Variable", "VarHandleOp", &[]), "asset_var"),
            node(
                "Variable/Assign",
                "AssignVariableOp",
                &["Variable", "asset_path_initializer"],
            ),
            node("path", "ReadVariableOp", &["Variable", "^Variable/Assign"]),
            node("table", "HashTableV2", &[]),
            node("init", "InitializeTableFromTextFileV2", &["table", "path"]),
        ];
        nodes.extend(extra);
        let mut m = restore_model(nodes, None);
        let meta = &mut m.meta_graphs[0];
        // Only the table matters here: the restore reads from the saver's own feed.
        let graph = meta.graph_def.as_mut().unwrap();
        graph
            .node
            .push(node("prefix", "Identity", &["saver_filename"]));
        graph.node.push(node("saver_filename", "Placeholder", &[]));
        meta.saver_def = Some(SaverDef {
            filename_tensor_name: "saver_filename:0".into(),
            ..Default::default()
        });
        meta.asset_file_def.push(tfsandbox::scan::tf::AssetFileDef {
            tensor_info: Some(tfsandbox::scan::tf::TensorInfo {
                encoding: Some(tensor_info::Encoding::Name(
                    "asset_path_initializer:0".into(),
                )),
            }),
            filename: "vocab.txt".into(),
        });
        m
    };
    assert_eq!(restore_flags(&model(vec![])), BTreeSet::new());
    let file_read: BTreeSet<_> = [Capability::FileRead].into();
    let overwrite = vec![
        string_const("elsewhere", "/etc/passwd"),
        node("again", "AssignVariableOp", &["Variable", "elsewhere"]),
    ];
    assert_eq!(restore_flags(&model(overwrite)), file_read);
    let alias = vec![shared(node("alias", "VarHandleOp", &[]), "asset_var")];
    assert_eq!(restore_flags(&model(alias)), file_read);
}

/// A function-valued attribute naming a registered op, or nothing in the library, is judged too.
#[test]
fn ops_named_by_function_attributes_are_judged() {
    let call = |target: &str| {
        let mut n = node("call", "PartitionedCall", &[]);
        n.attr.insert(
            "f".into(),
            AttrValue {
                value: Some(attr_value::Value::Func(tfsandbox::scan::tf::NameAttrList {
                    name: target.into(),
                    ..Default::default()
                })),
            },
        );
        n
    };
    let flags = |target: &str| {
        let mut m = restore_model(vec![node("prefix", "Placeholder", &[])], None);
        m.meta_graphs[0].graph_def.as_mut().unwrap().node = vec![call(target)];
        restore_flags(&m)
    };
    assert_eq!(flags("WriteFile"), [Capability::FileWrite].into());
    assert_eq!(
        flags("__inference_missing_1"),
        [Capability::UnknownOp].into()
    );
    assert_eq!(flags("Add"), BTreeSet::new());
}
