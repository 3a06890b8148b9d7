//! A peer that breaks the protocol, run in place of the worker to show the host survives it.
//!
//! It picks its misbehaviour from `TFSANDBOX_LOG`, the one variable every runtime hands its
//! worker:
//! - `garbage`: a MiB of noise on stdout, then silence;
//! - `huge-frame`: a yamux frame header claiming a 4 GiB body, then silence;
//! - `truncated`: a yamux frame header claiming 4 KiB, 10 bytes of it, then exit;
//! - `huge-message`: real yamux and HTTP/2, answering every call with a gRPC message whose length
//!   prefix claims 4 GiB;
//! - `stderr-flood`: 256 MiB on stderr with no newline, then a line that tries to pass for one of
//!   the host's own, then exit;
//! - `ping-flood`: yamux pings on stdout without end, never reading stdin;
//! - `never-opens`: never opens the protocol FIFOs the host names (docker), and waits for its
//!   stdin to close.
//!
//! Every other mode speaks where the worker would: on the host's FIFOs where it names them.

use std::convert::Infallible;
use std::io::Write;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use tfsandbox_proto::transport;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;

/// A yamux v0 header: version, type (0 = data), flags (1 = SYN), stream id, length.
fn yamux_header(stream: u32, length: u32) -> Vec<u8> {
    let mut header = vec![0, 0];
    header.extend(1u16.to_be_bytes());
    header.extend(stream.to_be_bytes());
    header.extend(length.to_be_bytes());
    header
}

fn main() {
    let mode = std::env::var("TFSANDBOX_LOG").unwrap_or_default();
    if mode != "never-opens" {
        tfsandbox_checks::protocol_on_stdio();
    }
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "garbage" => {
            // A fixed LCG: the same noise each run.
            let mut state: u32 = 0x2545_f491;
            let noise: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            let _ = out.write_all(&noise);
            let _ = out.flush();
            wait_for_stdin_to_close();
        }
        "huge-frame" => {
            let _ = out.write_all(&yamux_header(2, u32::MAX));
            let _ = out.flush();
            wait_for_stdin_to_close();
        }
        "truncated" => {
            let _ = out.write_all(&yamux_header(2, 4096));
            let _ = out.write_all(&[7; 10]);
            let _ = out.flush();
        }
        "stderr-flood" => {
            drop(out);
            let mut err = std::io::stderr().lock();
            let chunk = vec![b'A'; 1 << 20];
            for _ in 0..256 {
                let _ = err.write_all(&chunk);
            }
            let _ = err.write_all(b"\n\r\x1b[2K ERROR tfsandbox: forged by the worker\n");
            let _ = err.flush();
            std::process::exit(3);
        }
        "ping-flood" => {
            // Ping frames: version 0, type 2, flags SYN, stream 0, an opaque value.
            let pings: Vec<u8> = (0..4096u32)
                .flat_map(|n| {
                    [0u8, 2, 0, 1, 0, 0, 0, 0]
                        .into_iter()
                        .chain(n.to_be_bytes())
                })
                .collect();
            while out.write_all(&pings).is_ok() {}
        }
        "huge-message" => {
            drop(out);
            huge_message();
        }
        "never-opens" => wait_for_stdin_to_close(),
        other => {
            eprintln!("tfsandbox-hostile-peer: unknown mode '{other}'");
            std::process::exit(2);
        }
    }
}

fn wait_for_stdin_to_close() {
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
}

fn huge_message() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let router = Server::builder().add_service(HugeReply);
        let _ = transport::serve(
            tokio::io::stdin(),
            tokio::io::stdout(),
            router,
            futures::future::pending().boxed(),
        )
        .await;
    });
}

/// Answers every call of the worker service with a length prefix of 4 GiB and a few bytes.
#[derive(Clone)]
struct HugeReply;

impl NamedService for HugeReply {
    const NAME: &'static str = "tfsandbox.v1.Worker";
}

impl tower::Service<http::Request<Body>> for HugeReply {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        let mut message = vec![0u8];
        message.extend(u32::MAX.to_be_bytes());
        message.extend([1, 2, 3, 4]);
        let body = Body::new(http_body_util::Full::new(Bytes::from(message)));
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .expect("a valid response");
        async move { Ok(response) }.boxed()
    }
}
