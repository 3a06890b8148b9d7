//! `tfsandbox serve` against hostile clients and hostile model folders, through the real server
//! and TensorFlow Serving's API (the generated Rust client): a tiny request that asks for
//! gigabytes, idle connections that would take the descriptors a worker restart needs, a version
//! folder that is a symlink, and the Unix socket's mode. Also the library's rule behind the
//! restart: a worker that fails to start is retried, not counted as a crash.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tfsandbox::{
    Config, Predict, ProcessSettings, RestartPolicy, RuntimeConfig, RuntimeKind, Sandbox, Tensor,
};
use tfsandbox_checks::serve::{unix_channel, Serve};
use tfsandbox_checks::{config, copy_dir, fixture, jailer_path, kill_worker};
use tfsandbox_serve::proto::serving::model_service_client::ModelServiceClient;
use tfsandbox_serve::proto::serving::prediction_service_client::PredictionServiceClient;
use tfsandbox_serve::proto::serving::{
    model_spec::VersionChoice, GetModelStatusRequest, ModelSpec, ModelVersionStatus,
    PredictRequest, PredictResponse,
};
use tfsandbox_serve::proto::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};
use tonic::transport::Channel;

/// How the server process starts: its soft RLIMIT_NOFILE and umask, set in the child only.
#[derive(Default, Clone, Copy)]
struct ChildSetup {
    nofile_soft: Option<u64>,
    umask: Option<libc::mode_t>,
}

/// The server, with the address of its gRPC port.
struct Server {
    serve: Serve,
    tcp: SocketAddr,
}

impl Server {
    /// SIGTERM, as an operator would: serve stops its sandboxes and exits, leaving nothing
    /// behind. Waited for off the runtime, so dropped clients close their connections meanwhile.
    async fn stop(self) {
        tokio::task::spawn_blocking(move || self.serve.stop())
            .await
            .expect("stop serve");
    }

    fn pid(&self) -> u32 {
        self.serve.pid()
    }

    /// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// User plus system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which sits in parentheses.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Its children: the process runtime's jailers, one per worker. Any of its threads may
    /// have started one, and each thread lists its own.
    fn children(&self) -> Vec<u32> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
            .flat_map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.tcp))
            .unwrap()
            .connect_timeout(Duration::from_secs(60))
            .connect()
            .await
            .expect("connect to serve")
    }
}

/// Starts `tfsandbox serve` on a free loopback port; returns once it prints `listening on`.
fn start_serve(args: &[&std::ffi::OsStr], setup: ChildSetup) -> Server {
    let mut command = Serve::command(RuntimeKind::Process, 0, args);
    // SAFETY: only async-signal-safe calls (setrlimit, umask) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some(soft) = setup.nofile_soft {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The soft limit only, as `ulimit -Sn` would: the jailer may still raise its own.
                limit.rlim_cur = soft;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(mask) = setup.umask {
                libc::umask(mask);
            }
            Ok(())
        });
    }
    let serve = Serve::start(command);
    let tcp = serve
        .listening
        .iter()
        .find_map(|address| address.parse().ok())
        .expect("a gRPC address among the listeners");
    Server { serve, tcp }
}

fn spec(model: &str) -> Option<ModelSpec> {
    Some(ModelSpec {
        name: model.to_string(),
        ..ModelSpec::default()
    })
}

fn tensor(dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        dtype: dtype as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..TensorProto::default()
    }
}

async fn predict(
    channel: &Channel,
    model: &str,
    inputs: Vec<(&str, TensorProto)>,
) -> Result<PredictResponse, tonic::Status> {
    let mut request = tonic::Request::new(PredictRequest {
        model_spec: spec(model),
        inputs: inputs
            .into_iter()
            .map(|(k, t)| (k.to_string(), t))
            .collect(),
        output_filter: Vec::new(),
    });
    // A server that did build the tensors would take far longer than this.
    request.set_timeout(Duration::from_secs(30));
    PredictionServiceClient::new(channel.clone())
        .predict(request)
        .await
        .map(|r| r.into_inner())
}

/// A model config serving every version under `half` as half_plus_two, written in `base`.
fn every_version_of_half_plus_two(base: &std::path::Path, half: &std::path::Path) -> PathBuf {
    let config_file = base.join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{ config {{ name: 'half_plus_two' base_path: '{}' model_version_policy {{ all {{}} }} }} }}\n",
            half.display()
        ),
    )
    .unwrap();
    config_file
}

/// GetModelStatus of one version.
async fn version_status(channel: &Channel, model: &str, version: i64) -> ModelVersionStatus {
    let status = ModelServiceClient::new(channel.clone())
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(ModelSpec {
                name: model.into(),
                version_choice: Some(VersionChoice::Version(version)),
                ..ModelSpec::default()
            }),
        })
        .await
        .expect("GetModelStatus")
        .into_inner();
    status
        .model_version_status
        .into_iter()
        .next()
        .expect("the version's status")
}

fn x(values: &[f32]) -> TensorProto {
    TensorProto {
        float_val: values.to_vec(),
        ..tensor(DataType::DtFloat, &[values.len() as i64, 1])
    }
}

/// The most the server's peak RSS may grow over a hostile request.
const MAX_GROWTH_KIB: u64 = 200 * 1024;

#[tokio::test]
async fn a_tiny_request_cannot_make_serve_allocate_gigabytes() {
    let base = tempfile::tempdir().unwrap();
    let echo = base.path().join("string_echo");
    copy_dir(&fixture("string_echo"), &echo.join("1"));
    let multi = base.path().join("multi_io");
    copy_dir(&fixture("multi_io"), &multi.join("1"));
    let config_file = base.path().join("models.config");
    std::fs::write(
        &config_file,
        format!(
            "model_config_list {{\n  config {{ name: 'string_echo' base_path: '{}' }}\n  config {{ name: 'multi_io' base_path: '{}' }}\n}}\n",
            echo.display(),
            multi.display()
        ),
    )
    .unwrap();
    let server = start_serve(
        &["--model_config_file".as_ref(), config_file.as_os_str()],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    let text = TensorProto {
        string_val: vec![Bytes::from_static(b"ab")],
        ..tensor(DataType::DtString, &[1])
    };
    let answer = predict(&channel, "string_echo", vec![("text", text.clone())])
        .await
        .unwrap();
    assert_eq!(answer.outputs["upper"].string_val, ["AB"]);
    let peak_before = server.status_kib("VmHWM");
    let check_peak = |what: &str| {
        let peak = server.status_kib("VmHWM");
        assert!(
            peak < peak_before + MAX_GROWTH_KIB,
            "{what}: serve's peak RSS went from {peak_before} KiB to {peak} KiB"
        );
    };

    // 24 bytes on the wire: 100 million empty strings, each a 32-byte handle once built.
    let started = Instant::now();
    let error = predict(
        &channel,
        "string_echo",
        vec![("text", tensor(DataType::DtString, &[100_000_000]))],
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(error.message().contains("'text'"), "{}", error.message());
    assert!(
        error.message().contains("3200000000 bytes"),
        "{}",
        error.message()
    );
    assert!(started.elapsed() < Duration::from_secs(5), "refused late");
    check_peak("100M empty strings");

    // An input the signature does not have is refused by name before anything is built.
    let error = predict(
        &channel,
        "string_echo",
        vec![
            ("text", text.clone()),
            (
                "nope",
                TensorProto {
                    float_val: vec![1.0],
                    ..tensor(DataType::DtFloat, &[100_000_000])
                },
            ),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("input 'nope'") && error.message().contains("text"),
        "{}",
        error.message()
    );
    check_peak("an unknown input of 400 MB");

    // Two inputs of 320 MB each, under the per-tensor limit, over the per-request one.
    let error = predict(
        &channel,
        "multi_io",
        vec![
            (
                "a",
                TensorProto {
                    float_val: vec![1.0],
                    ..tensor(DataType::DtFloat, &[40_000_000, 2])
                },
            ),
            (
                "b",
                TensorProto {
                    int64_val: vec![1],
                    ..tensor(DataType::DtInt64, &[40_000_000])
                },
            ),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains("640000000 bytes") && error.message().contains("per request"),
        "{}",
        error.message()
    );
    check_peak("two inputs of 320 MB");

    // The server is as it was.
    let answer = predict(&channel, "string_echo", vec![("text", text)])
        .await
        .unwrap();
    assert_eq!(answer.outputs["upper"].string_val, ["AB"]);
    drop(channel);
    server.stop().await;
}

/// The worker's answer is counted as the request is, before it is converted for the client:
/// string_echo answers each string with itself and its length, more than it was sent.
#[tokio::test]
async fn an_answer_past_the_request_budget_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let echo = base.path().join("string_echo");
    copy_dir(&fixture("string_echo"), &echo.join("1"));
    let server = start_serve(
        &[
            "--model_name".as_ref(),
            "string_echo".as_ref(),
            "--model_base_path".as_ref(),
            echo.as_os_str(),
            "--max_request_bytes".as_ref(),
            "10000000".as_ref(),
        ],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    let strings = |n: usize| TensorProto {
        string_val: vec![Bytes::from_static(b"a"); n],
        ..tensor(DataType::DtString, &[n as i64])
    };
    // 300000 strings of one byte: 9.9 MB in memory, within the budget; the answer adds their
    // lengths and goes past it.
    let error = predict(&channel, "string_echo", vec![("text", strings(300_000))])
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains("the answer of signature")
            && error.message().contains("'upper': string [300000]"),
        "{}",
        error.message()
    );
    let answer = predict(&channel, "string_echo", vec![("text", strings(3))])
        .await
        .unwrap();
    assert_eq!(answer.outputs["upper"].string_val, ["A", "A", "A"]);
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_cannot_take_a_model_down() {
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    // A soft limit of 256 descriptors: 128 left for connections by default.
    let server = start_serve(
        &[
            "--model_name".as_ref(),
            "half_plus_two".as_ref(),
            "--model_base_path".as_ref(),
            half.as_os_str(),
            "--idle_timeout".as_ref(),
            "3".as_ref(),
        ],
        ChildSetup {
            nofile_soft: Some(256),
            ..ChildSetup::default()
        },
    );
    let [jailer] = server.children()[..] else {
        panic!("one worker: {:?}", server.children());
    };

    // More idle connections than the server has descriptors; they send nothing.
    let mut idle = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect_timeout(&server.tcp, Duration::from_secs(2)) {
            Ok(stream) => idle.push(stream),
            Err(error) => panic!("connect {} (after {}): {error}", server.tcp, idle.len()),
        }
    }
    // Neither accepting nor failing to accept spins a core.
    std::thread::sleep(Duration::from_millis(500));
    let ticks = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu_ticks() - ticks;
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(
        used < per_second,
        "serve used {used} ticks of CPU in 2 s with idle connections open"
    );

    // The worker dies while the connections are held; its replacement needs descriptors.
    let pid = rustix::process::Pid::from_raw(jailer as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let children = server.children();
        if !children.is_empty() && !children.contains(&jailer) {
            break;
        }
        assert!(Instant::now() < deadline, "no new worker within a minute");
        std::thread::sleep(Duration::from_millis(100));
    }

    // An idle connection is closed by the server: past its HTTP/2 settings, a read sees the end.
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut said = Vec::new();
    let read = idle[0].read_to_end(&mut said);
    assert!(read.is_ok(), "an idle connection was not closed: {read:?}");

    // A new client gets its answer once the idle ones have been closed in turn, while the rest
    // are still open on this side.
    let channel = tokio::time::timeout(Duration::from_secs(90), server.channel())
        .await
        .expect("a connection within 90 s");
    let answer = predict(&channel, "half_plus_two", vec![("x", x(&[2.0]))])
        .await
        .unwrap();
    assert_eq!(answer.outputs["y"].float_val, vec![3.0]);
    drop(idle);
    drop(channel);
    server.stop().await;
}

/// A call that runs longer than the idle timeout keeps its connection: idle means no call in
/// flight as well as no traffic.
/// SIGTERM drains, as TensorFlow Serving's does: serve stops taking calls, lets the one in flight
/// finish and answer, and exits 0.
#[tokio::test]
async fn sigterm_lets_the_call_in_flight_finish() {
    let base = tempfile::tempdir().unwrap();
    let busy = base.path().join("busy_loop");
    copy_dir(&fixture("busy_loop"), &busy.join("1"));
    let server = start_serve(
        &[
            "--model_name".as_ref(),
            "busy_loop".as_ref(),
            "--model_base_path".as_ref(),
            busy.as_os_str(),
        ],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    let n = TensorProto {
        int64_val: vec![600_000],
        ..tensor(DataType::DtInt64, &[])
    };
    let started = Instant::now();
    let in_flight = {
        let channel = channel.clone();
        tokio::spawn(async move { predict(&channel, "busy_loop", vec![("n", n)]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = rustix::process::Pid::from_raw(server.pid() as i32).expect("a real pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal serve");
    let answer = in_flight
        .await
        .unwrap()
        .expect("the call in flight is answered");
    assert_eq!(answer.outputs["count"].int64_val, vec![600_000]);
    assert!(
        started.elapsed() > Duration::from_millis(600),
        "the call took only {:?}: it may have ended before the signal",
        started.elapsed()
    );
    // A new connection is not served any more.
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        Channel::from_shared(format!("http://{}", server.tcp))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect(),
    )
    .await;
    if let Ok(Ok(late)) = late {
        let mut request = tonic::Request::new(PredictRequest {
            model_spec: spec("busy_loop"),
            ..PredictRequest::default()
        });
        request.set_timeout(Duration::from_secs(2));
        let refused = PredictionServiceClient::new(late).predict(request).await;
        assert!(refused.is_err(), "a call after SIGTERM was served");
    }
    drop(channel);
    // Exits 0 (stop signals again, which changes nothing, and waits).
    server.stop().await;
}

#[tokio::test]
async fn a_long_call_outlives_the_idle_timeout() {
    let base = tempfile::tempdir().unwrap();
    let busy = base.path().join("busy_loop");
    copy_dir(&fixture("busy_loop"), &busy.join("1"));
    let server = start_serve(
        &[
            "--model_name".as_ref(),
            "busy_loop".as_ref(),
            "--model_base_path".as_ref(),
            busy.as_os_str(),
            "--idle_timeout".as_ref(),
            "1".as_ref(),
        ],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    // Seconds of work (some 3 us per iteration on an idle machine, more under load), silent on
    // the wire all along.
    let n = TensorProto {
        int64_val: vec![1_500_000],
        ..tensor(DataType::DtInt64, &[])
    };
    let started = Instant::now();
    let answer = predict(&channel, "busy_loop", vec![("n", n)])
        .await
        .unwrap();
    assert_eq!(answer.outputs["count"].int64_val, vec![1_500_000]);
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the call took only {:?}, less than the idle timeout would need to bite",
        started.elapsed()
    );
    drop(channel);
    server.stop().await;
}

#[tokio::test]
async fn a_symlinked_version_folder_is_refused_and_the_socket_mode_is_set() {
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    // Version 2 points at a folder outside the base path: whatever it holds would be mounted.
    let elsewhere = base.path().join("elsewhere");
    copy_dir(&fixture("half_plus_two"), &elsewhere);
    std::os::unix::fs::symlink(&elsewhere, half.join("2")).unwrap();
    let socket = base.path().join("serve.sock");
    let args = [
        "--model_name".as_ref(),
        "half_plus_two".as_ref(),
        "--model_base_path".as_ref(),
        half.as_os_str(),
        "--grpc_socket_path".as_ref(),
        socket.as_os_str(),
    ];
    // A umask that hides nothing: the socket's mode must not follow it.
    let open_umask = ChildSetup {
        umask: Some(0),
        ..ChildSetup::default()
    };

    let server = start_serve(&args, open_umask);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    // The socket answers as the port does.
    let over_socket = unix_channel(&socket).await;
    let answer = predict(&over_socket, "half_plus_two", vec![("x", x(&[2.0]))])
        .await
        .unwrap();
    assert_eq!(
        answer.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1))
    );
    let channel = server.channel().await;
    let answer = predict(&channel, "half_plus_two", vec![("x", x(&[2.0]))])
        .await
        .unwrap();
    assert_eq!(
        answer.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1)),
        "the symlinked version 2 must not serve"
    );
    let two = &version_status(&channel, "half_plus_two", 2).await;
    let message = &two.status.as_ref().unwrap().error_message;
    assert_eq!(two.state, 50, "END: {two:?}");
    assert!(
        message.contains("symlink") && message.contains(&half.join("2").display().to_string()),
        "{message}"
    );
    drop((channel, over_socket));
    server.stop().await;

    // Asked to, it follows the symlink; and the socket takes the mode given.
    let _ = std::fs::remove_file(&socket);
    let mut follow = args.to_vec();
    follow.extend(
        ["--follow_version_symlinks", "--grpc_socket_mode", "600"].map(std::ffi::OsStr::new),
    );
    let server = start_serve(&follow, open_umask);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let channel = server.channel().await;
    let answer = predict(&channel, "half_plus_two", vec![("x", x(&[2.0]))])
        .await
        .unwrap();
    assert_eq!(
        answer.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(2))
    );
    drop(channel);
    server.stop().await;
}

/// Starts that fail (here: the jailer is gone for a while) are retried for as long as it takes;
/// only workers that started and died count toward `max_restarts`.
#[tokio::test]
async fn a_worker_that_cannot_start_for_a_while_is_not_a_crash_loop() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let jailer = dir.path().join("tfsandbox-jailer");
    std::fs::copy(jailer_path(), &jailer).unwrap();
    let sandbox = Sandbox::start(Config {
        runtime: RuntimeConfig::Process(ProcessSettings {
            jailer_path: Some(jailer.clone()),
            ..tfsandbox_checks::process_settings()
        }),
        restart: RestartPolicy {
            max_restarts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            ..RestartPolicy::default()
        },
        ..config(RuntimeKind::Process)
    })
    .await
    .unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let hidden: PathBuf = dir.path().join("away");
    std::fs::rename(&jailer, &hidden).unwrap();
    kill_worker(&sandbox, RuntimeKind::Process).await;
    // Long enough for many more failed starts than max_restarts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::rename(&hidden, &jailer).unwrap();
    let out = half
        .predict_with(
            Predict::new([("x", Tensor::new(&[1, 1], &[2.0f32]).unwrap())])
                .deadline(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
}

#[tokio::test]
async fn a_version_that_would_pass_the_memory_budget_is_not_loaded_and_the_rest_serve() {
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    copy_dir(&fixture("half_plus_two"), &half.join("2"));
    let config_file = every_version_of_half_plus_two(base.path(), &half);
    // Each sandbox may use 512 MiB: the budget holds one version's, not two.
    let server = start_serve(
        &[
            "--model_config_file".as_ref(),
            config_file.as_os_str(),
            "--memory".as_ref(),
            "512M".as_ref(),
            "--max_total_memory".as_ref(),
            "768M".as_ref(),
        ],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    let answer = predict(&channel, "half_plus_two", vec![("x", x(&[2.0]))])
        .await
        .expect("the version within the budget serves");
    assert_eq!(
        answer.model_spec.unwrap().version_choice,
        Some(VersionChoice::Version(1))
    );
    let two = &version_status(&channel, "half_plus_two", 2).await;
    let error = two.status.as_ref().unwrap();
    assert_eq!(two.state, 50, "END: {two:?}");
    assert_eq!(
        error.error_code,
        tonic::Code::ResourceExhausted as i32,
        "{error:?}"
    );
    assert!(
        error.error_message.contains("--max_total_memory 805306368"),
        "{}",
        error.error_message
    );
    drop(channel);
    server.stop().await;
}

/// The digest of a folder as the README defines it, computed here on its own: every regular
/// file (symlinks are not expected here) in the byte order of its `/`-separated relative path,
/// each as `f`, the path's length (u64 LE), the path, the content's length (u64 LE), the content.
fn expected_digest(dir: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    fn files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(root, &path, out);
            } else {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.push((relative, path));
            }
        }
    }
    let mut all = Vec::new();
    files(dir, dir, &mut all);
    all.sort();
    let mut hash = Sha256::new();
    for (relative, path) in all {
        let bytes = std::fs::read(path).unwrap();
        hash.update(b"f");
        hash.update((relative.len() as u64).to_le_bytes());
        hash.update(relative.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    format!("sha256:{}", hex::encode(hash.finalize()))
}

fn audit_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("the audit log was written")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn the_audit_log_records_loads_digests_refusals_and_request_ids() {
    let base = tempfile::tempdir().unwrap();
    let half = base.path().join("half_plus_two");
    copy_dir(&fixture("half_plus_two"), &half.join("1"));
    // Version 2 passes the memory budget; version 3 is a symlink out of the base path.
    copy_dir(&fixture("half_plus_two"), &half.join("2"));
    let elsewhere = base.path().join("elsewhere");
    copy_dir(&fixture("half_plus_two"), &elsewhere);
    std::os::unix::fs::symlink(&elsewhere, half.join("3")).unwrap();
    let config_file = every_version_of_half_plus_two(base.path(), &half);
    let log = base.path().join("audit.jsonl");
    let monitoring = base.path().join("monitoring.config");
    std::fs::write(
        &monitoring,
        "prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" }\n",
    )
    .unwrap();
    // A port free a moment ago, for REST (serve announces only gRPC's to this helper).
    let rest_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let server = start_serve(
        &[
            "--model_config_file".as_ref(),
            config_file.as_os_str(),
            "--memory".as_ref(),
            "512M".as_ref(),
            "--max_total_memory".as_ref(),
            "768M".as_ref(),
            "--audit_log".as_ref(),
            log.as_os_str(),
            "--monitoring_config_file".as_ref(),
            monitoring.as_os_str(),
            "--rest_api_port".as_ref(),
            rest_port.as_ref(),
        ],
        ChildSetup::default(),
    );
    let channel = server.channel().await;
    let call = |id: &str| {
        let mut request = tonic::Request::new(PredictRequest {
            model_spec: spec("half_plus_two"),
            inputs: [("x".to_string(), x(&[2.0]))].into(),
            output_filter: Vec::new(),
        });
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
        request.set_timeout(Duration::from_secs(60));
        request
    };
    let answer = PredictionServiceClient::new(channel.clone())
        .predict(call("abc-123"))
        .await
        .expect("version 1 serves");
    assert_eq!(
        answer.metadata().get("x-request-id").unwrap(),
        "abc-123",
        "the client's request id comes back"
    );
    // One past the length a client may give is replaced by one serve makes.
    let long = "a".repeat(129);
    let answer = PredictionServiceClient::new(channel.clone())
        .predict(call(&long))
        .await
        .expect("version 1 serves");
    let made = answer
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(made.starts_with("tfs-"), "{made}");
    // The counters, as TensorFlow Serving serves them: Prometheus text on the REST port.
    let mut http = TcpStream::connect(format!("127.0.0.1:{rest_port}")).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"GET /monitoring/prometheus/metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut metrics = String::new();
    http.read_to_string(&mut metrics).unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let counter = |source: &str, event: &str| -> u64 {
        let name =
            format!("tfsandbox_security_events_total{{source=\"{source}\",event=\"{event}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(counter("serve", "version_loaded"), 1, "{metrics}");
    assert_eq!(counter("serve", "version_refused"), 2, "{metrics}");
    assert_eq!(counter("sandbox", "model_loaded"), 1, "{metrics}");
    assert_eq!(counter("sandbox", "worker_restarted"), 0, "{metrics}");
    // The two Predicts, and this GET.
    assert_eq!(counter("serve", "call"), 3, "{metrics}");
    // TensorFlow Serving's own metrics, under its names, and the sandboxes' state.
    let line = |prefix: &str| -> String {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
            .to_string()
    };
    assert!(metrics.contains("# TYPE :tensorflow:serving:request_count counter"));
    assert_eq!(
        line(":tensorflow:serving:request_count{model_name=\"half_plus_two\",status=\"OK\"}"),
        ":tensorflow:serving:request_count{model_name=\"half_plus_two\",status=\"OK\"} 2"
    );
    assert!(
        line(":tensorflow:cc:saved_model:load_attempt_count{").ends_with("status=\"success\"} 1")
    );
    assert_eq!(
        line("tfsandbox_calls_in_flight{"),
        "tfsandbox_calls_in_flight{model_name=\"half_plus_two\",version=\"1\"} 0"
    );
    assert!(
        line("tfsandbox_worker_restarts_total{").ends_with(" 0"),
        "{metrics}"
    );
    let memory: u64 = line("tfsandbox_worker_memory_bytes{")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        memory > 10 << 20,
        "a worker with TensorFlow loaded holds more than {memory} bytes"
    );
    drop(channel);
    server.stop().await;

    let lines = audit_lines(&log);
    let find = |event: &str, pick: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .find(|l| l["event"] == event && pick(l))
            .unwrap_or_else(|| panic!("no {event} line in {lines:#?}"))
            .clone()
    };
    let loaded = find("version_loaded", &|l| l["version"] == 1);
    assert_eq!(loaded["model"], "half_plus_two");
    assert_eq!(
        loaded["digest"],
        expected_digest(&half.join("1")),
        "{loaded}"
    );
    // The library's own load event carries the same digest.
    let library = find("model_loaded", &|l| l["source"] == "sandbox");
    assert_eq!(library["digest"], loaded["digest"]);
    // With what its ops can do, as the worker's scan found: half_plus_two's can do nothing more.
    assert_eq!(loaded["capabilities"], serde_json::json!([]), "{loaded}");
    assert_eq!(library["capabilities"], loaded["capabilities"]);
    find("sandbox_started", &|l| l["runtime"] == "process");
    let budget = find("version_refused", &|l| l["version"] == 2);
    assert_eq!(budget["reason"], "budget", "{budget}");
    assert!(budget["message"]
        .as_str()
        .unwrap()
        .contains("--max_total_memory"));
    let symlink = find("version_refused", &|l| l["version"] == 3);
    assert_eq!(symlink["reason"], "symlink", "{symlink}");
    let called = find("call", &|l| l["request_id"] == "abc-123");
    assert!(
        called["method"]
            .as_str()
            .unwrap()
            .ends_with("/tensorflow.serving.PredictionService/Predict"),
        "{called}"
    );
    let replaced = find("call", &|l| l["request_id"] == made.as_str());
    assert_eq!(replaced["given_request_id_replaced"], true);
    assert!(
        !lines.iter().any(|l| l.to_string().contains(&long)),
        "a refused request id is not written"
    );
}

#[tokio::test]
async fn a_killed_worker_is_a_restart_event_on_the_library_stream() {
    let config = config(RuntimeKind::Process);
    let mut events = config.events.subscribe();
    let sandbox = Sandbox::start(config).await.unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    assert_eq!(
        half.digest().sha256,
        expected_digest(&fixture("half_plus_two"))
    );
    kill_worker(&sandbox, RuntimeKind::Process).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let restarted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no restart event; saw {seen:#?}"))
            .expect("the stream is open and this subscriber keeps up");
        if let tfsandbox::Event::WorkerRestarted {
            exit, generation, ..
        } = &event
        {
            break (exit.clone(), *generation);
        }
        seen.push(event);
    };
    assert_eq!(restarted.1, 2, "the second worker");
    assert_eq!(restarted.0.signal, Some(9), "{:?}", restarted.0);
    assert!(
        seen.iter()
            .any(|e| matches!(e, tfsandbox::Event::SandboxStarted { .. })),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|e| matches!(e, tfsandbox::Event::ModelLoaded { digest, .. } if *digest == half.digest().sha256)),
        "{seen:#?}"
    );
}
