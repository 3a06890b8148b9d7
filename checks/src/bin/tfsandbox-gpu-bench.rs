//! `tfsandbox-gpu-bench --model DIR --cuda-library-dir DIR [--cpu-library-dir DIR] [--size N]
//! [--steps K] [--runs R]`:
//! runs the `matmul_chain` model (checks/gpu/) in the process runtime twice, once with every GPU
//! on the CUDA libraries and once on the CPU library without GPUs, and prints what Info reported
//! and the time per call of each as JSON lines. checks/gpu/run-on-gpu.sh runs it on a GPU machine
//! and writes the figures into BENCHMARKS.md. Exits 1 if the GPU run failed or TensorFlow did not
//! register a GPU.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tfsandbox::{Config, Gpus, Sandbox, Tensor};

struct Args {
    model: PathBuf,
    cuda_library_dir: PathBuf,
    /// The CPU run's libtensorflow folder; unset: the one the worker's RUNPATH names.
    cpu_library_dir: Option<PathBuf>,
    size: i32,
    steps: i32,
    runs: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        model: PathBuf::from("checks/gpu/matmul_chain"),
        cuda_library_dir: PathBuf::from(".cache/libtensorflow-cuda/lib"),
        cpu_library_dir: None,
        size: 4096,
        steps: 20,
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<i64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => args.model = value.into(),
            "--cuda-library-dir" => args.cuda_library_dir = value.into(),
            "--cpu-library-dir" => args.cpu_library_dir = Some(value.into()),
            "--size" => args.size = number(&value)? as i32,
            "--steps" => args.steps = number(&value)? as i32,
            "--runs" => args.runs = number(&value)?.max(1) as usize,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(args)
}

/// One sandbox: Info, then a warm-up call and `runs` timed calls. Returns its JSON report.
async fn measure(args: &Args, gpu: bool) -> Result<serde_json::Value, String> {
    let mut config = Config::default().with_model(&args.model);
    if gpu {
        config = config.with_gpus(Gpus::All, &args.cuda_library_dir);
    } else if let Some(dir) = &args.cpu_library_dir {
        config.gpu.library_dirs = vec![dir.clone()];
    }
    let started = Instant::now();
    let sandbox = Sandbox::start(config).await.map_err(|e| e.to_string())?;
    let info = sandbox.info().await.map_err(|e| e.to_string())?;
    let model = sandbox
        .load_model(&args.model)
        .await
        .map_err(|e| e.to_string())?;
    let call = || async {
        let outputs = model
            .predict([
                ("size", Tensor::scalar(args.size)),
                ("steps", Tensor::scalar(args.steps)),
            ])
            .await
            .map_err(|e| e.to_string())?;
        let checksum = outputs
            .get("checksum")
            .ok_or("no checksum output")?
            .to_vec::<f32>()
            .map_err(|e| e.to_string())?;
        Ok::<f32, String>(checksum.first().copied().unwrap_or(f32::NAN))
    };
    let first = Instant::now();
    let checksum = call().await?;
    let first_call = first.elapsed();
    let ready = started.elapsed();
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        call().await?;
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let flops = 2.0 * f64::from(args.size).powi(3) * f64::from(args.steps);
    let gpus: Vec<serde_json::Value> = info
        .gpus
        .iter()
        .map(|g| {
            json!({"name": g.name, "bus_id": g.bus_id, "tf_device": g.tf_device, "memory_bytes": g.memory_bytes})
        })
        .collect();
    sandbox.shutdown().await;
    Ok(json!({
        "mode": if gpu { "gpu" } else { "cpu" },
        "library_dir": if gpu {
            args.cuda_library_dir.display().to_string()
        } else {
            args.cpu_library_dir.as_ref().map_or("the worker's RUNPATH".into(), |d| d.display().to_string())
        },
        "tensorflow_version": info.tensorflow_version,
        "gpu_registered": info.gpu_registered,
        "gpus": gpus,
        "size": args.size,
        "steps": args.steps,
        "runs": args.runs,
        "start_to_first_answer_s": ready.as_secs_f64(),
        "first_call_s": first_call.as_secs_f64(),
        "median_call_s": median.as_secs_f64(),
        "min_call_s": times[0].as_secs_f64(),
        "gflops_per_s": flops / median.as_secs_f64() / 1e9,
        "checksum": checksum,
    }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("tfsandbox-gpu-bench: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    // The worker's log lines (TensorFlow's "Created device ..." among them) go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("tfsandbox=info"))
        .try_init();
    let mut ok = true;
    for gpu in [true, false] {
        match measure(&args, gpu).await {
            Ok(report) => {
                if gpu && report["gpu_registered"] != json!(true) {
                    ok = false;
                }
                println!("{report}");
            }
            Err(error) => {
                ok = false;
                println!(
                    "{}",
                    json!({"mode": if gpu { "gpu" } else { "cpu" }, "error": error})
                );
            }
        }
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
