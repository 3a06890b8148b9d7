//! The host's transport fed any bytes as the worker's stdout: yamux, HTTP/2 and gRPC framing
//! decoded from a hostile peer. A call must end in an error, never a panic or a hang.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::InfoRequest;

fuzz_target!(|data: &[u8]| {
    // Paused time: a timeout fires as soon as nothing else can run, so a stalled peer costs
    // no wall-clock time.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let stdout = std::io::Cursor::new(data.to_vec());
    runtime.block_on(async move {
        let Ok((channel, _driver)) = transport::connect(stdout, tokio::io::sink()).await else {
            return;
        };
        let mut client = WorkerClient::new(channel);
        let _ = tokio::time::timeout(Duration::from_secs(10), client.info(InfoRequest {})).await;
    });
});
