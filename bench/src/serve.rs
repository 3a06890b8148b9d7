//! The serve path: a TensorFlow Serving client's Predict through a real `tfsandbox serve` (its
//! own process, the process runtime) over TCP and over its Unix socket, against the library call
//! plus one loopback round trip; and 64 callers with and without `--enable_batching`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tfsandbox::{RuntimeKind, Sandbox};
use tfsandbox_serve::proto::serving::prediction_service_client::PredictionServiceClient;
use tfsandbox_serve::proto::serving::{ModelSpec, PredictRequest};
use tfsandbox_serve::proto::{tensor_shape_proto, DataType, TensorProto, TensorShapeProto};
use tonic::transport::Channel;

use crate::stats::Samples;
use crate::timing::{concurrent, sequential};
use crate::{config, tiny, Plan};

/// Concurrent callers of the batching rows.
pub const CALLERS: usize = 64;

pub struct ServePath {
    pub tcp: Samples,
    pub unix: Samples,
    pub library: Samples,
    pub loopback: Samples,
    /// 64 callers, each one call after another: without batching, then with it.
    pub unbatched: Samples,
    pub batched: Samples,
}

/// A `tfsandbox serve` child, killed when dropped.
struct Server {
    child: Child,
    tcp: String,
    unix: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// SIGTERM, as an operator stops it (its sandboxes go with it), then SIGKILL past 30 s.
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(fixtures: &Path, extra: &[&str]) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let version = dir.path().join("half_plus_two/1");
        copy_dir(&fixtures.join("half_plus_two"), &version)?;
        let unix = dir.path().join("serve.sock");
        let batching = dir.path().join("batching.config");
        // One batch thread: batches form while it runs one, as TF Serving's do.
        std::fs::write(
            &batching,
            format!("max_batch_size {{ value: {CALLERS} }}\nbatch_timeout_micros {{ value: 0 }}\nmax_enqueued_batches {{ value: 100 }}\nnum_batch_threads {{ value: 1 }}\n"),
        )?;
        let tfsandbox = std::env::current_exe()?.with_file_name("tfsandbox");
        let mut child = Command::new(&tfsandbox)
            .args([
                "serve",
                "--port",
                "0",
                "--model_name",
                "m",
                "--model_base_path",
            ])
            .arg(version.parent().expect("a parent"))
            .arg("--grpc_socket_path")
            .arg(&unix)
            .args(
                extra
                    .iter()
                    .map(|a| a.replace("{batching}", &batching.display().to_string())),
            )
            .env("TFSANDBOX_LOG", "warn")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", tfsandbox.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut tcp = None;
        while tcp.is_none() {
            match lines.next() {
                Some(line) => {
                    if let Some(addr) = line?.strip_prefix("listening on ") {
                        if !addr.starts_with("unix:") {
                            tcp = Some(addr.to_string());
                        }
                    }
                }
                None => bail!("tfsandbox serve ended before listening"),
            }
        }
        // Its later lines are not read; a full pipe would block it, so they go nowhere.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            tcp: tcp.expect("set above"),
            unix,
            _dir: dir,
        })
    }

    async fn tcp_channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.tcp))?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn request() -> PredictRequest {
    let x = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: [1, 1]
                .into_iter()
                .map(|size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val: vec![1.0],
        ..TensorProto::default()
    };
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "m".into(),
            ..ModelSpec::default()
        }),
        inputs: [("x".to_string(), x)].into(),
        ..PredictRequest::default()
    }
}

async fn round_trips(channel: Channel, calls: usize) -> Result<Samples> {
    let client = PredictionServiceClient::new(channel);
    sequential(calls, || {
        let mut client = client.clone();
        async move {
            client.predict(request()).await?;
            Ok(())
        }
    })
    .await
}

async fn callers(channel: Channel, calls: usize) -> Result<Samples> {
    let client = PredictionServiceClient::new(channel);
    concurrent(CALLERS, calls, || {
        let mut client = client.clone();
        async move {
            client.predict(request()).await?;
            Ok(())
        }
    })
    .await
}

/// One byte there and back over a loopback TCP connection (TCP_NODELAY on both ends).
fn loopback(calls: usize) -> Result<Samples> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while stream.read(&mut byte)? == 1 {
            stream.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut samples = Vec::with_capacity(calls);
    let start = Instant::now();
    let mut byte = [7u8; 1];
    for _ in 0..calls {
        let t = Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        samples.push(t.elapsed());
    }
    let wall = start.elapsed();
    drop(stream);
    let _ = echo.join();
    Ok(Samples::new(samples, wall))
}

pub async fn measure(plan: &Plan, fixtures: &Path) -> Result<ServePath> {
    let calls = plan.rtt_calls;
    let library = {
        let sandbox = Sandbox::start(config(RuntimeKind::Process, fixtures)).await?;
        let model = sandbox.load_model(fixtures.join("half_plus_two")).await?;
        let samples = sequential(calls, || async {
            model.predict([("x", tiny())]).await?;
            Ok(())
        })
        .await?;
        sandbox.shutdown().await;
        samples
    };
    let loopback = loopback(calls)?;

    let server = Server::start(fixtures, &[])?;
    let tcp = round_trips(server.tcp_channel().await?, calls).await?;
    let unix = round_trips(
        tfsandbox_serve::client::unix_channel(&server.unix).await?,
        calls,
    )
    .await?;
    let per_caller = (plan.calls_per_caller / 4).max(16);
    let unbatched = callers(server.tcp_channel().await?, per_caller).await?;
    drop(server);

    let server = Server::start(
        fixtures,
        &[
            "--enable_batching",
            "--batching_parameters_file",
            "{batching}",
        ],
    )?;
    let batched = callers(server.tcp_channel().await?, per_caller).await?;
    drop(server);
    Ok(ServePath {
        tcp,
        unix,
        library,
        loopback,
        unbatched,
        batched,
    })
}
