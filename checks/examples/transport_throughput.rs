//! Round-trip throughput of large tensors through a sandbox: the `identity` fixture's uint8
//! signature, 1 to 256 MiB each way. Run: `cargo run --release -p tfsandbox-checks --example
//! transport_throughput [process|docker]` (after `cargo build --release --bins`).

use std::time::Instant;

use tfsandbox::{Predict, RuntimeKind, Sandbox, Tensor};
use tfsandbox_checks::{config, fixture};

#[tokio::main]
async fn main() {
    let runtime = match std::env::args().nth(1).as_deref() {
        Some("docker") => RuntimeKind::Docker,
        _ => RuntimeKind::Process,
    };
    let sandbox = Sandbox::start(config(runtime))
        .await
        .expect("sandbox starts");
    let model = sandbox
        .load_model(fixture("identity"))
        .await
        .expect("identity loads");
    println!("{runtime:?}: MiB each way, round trips, GiB/s (bytes in + out over wall time)");
    for mib in [1usize, 4, 16, 64, 256] {
        let data = vec![7u8; mib << 20];
        let tensor = Tensor::new(&[data.len()], &data).unwrap();
        let rounds = (512 / mib).clamp(2, 64);
        // One unmeasured call, so TensorFlow's allocations for this size are warm.
        let call = || {
            model.predict_with(Predict::new([("data", tensor.clone())]).signature("bytes_identity"))
        };
        call().await.expect("warm-up");
        let start = Instant::now();
        for _ in 0..rounds {
            let out = call().await.expect("round trip");
            assert_eq!(out["data_out"].len(), data.len());
        }
        let seconds = start.elapsed().as_secs_f64();
        let gib = (2 * rounds * data.len()) as f64 / (1u64 << 30) as f64;
        println!("{mib:>4} {rounds:>4} {:>6.2}", gib / seconds);
    }
}
