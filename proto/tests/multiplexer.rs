//! The multiplexer alone, over in-memory pipes: many streams, both directions full at once.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use tfsandbox_proto::transport::{Mode, Multiplexer};

const STREAMS: usize = 8;
const BYTES_PER_STREAM: usize = 8 * 1024 * 1024;

/// Each side opens streams and writes to them while echoing the peer's streams back. With small
/// pipes every window and buffer fills in both directions together: a driver that stops reading
/// while a write waits would stall here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_saturated_at_once_make_progress() {
    let (a_io, b_io) = tokio::io::duplex(16 * 1024);
    let (a_read, a_write) = tokio::io::split(a_io);
    let (b_read, b_write) = tokio::io::split(b_io);
    let a = Multiplexer::spawn(a_read, a_write, Mode::Client);
    let b = Multiplexer::spawn(b_read, b_write, Mode::Server);

    let work = async {
        tokio::join!(side(a, 1), side(b, 2));
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("all streams echoed within the limit");
}

async fn side(mux: Multiplexer, seed: u8) {
    let Multiplexer {
        opener,
        mut inbound,
        ..
    } = mux;
    // Echo whatever the peer opens.
    let echo = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..STREAMS {
            let stream = inbound.recv().await.expect("peer opens its streams");
            echoes.push(tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                futures::io::copy(&mut reader, &mut writer)
                    .await
                    .expect("echo");
                writer.close().await.expect("close echo");
            }));
        }
        for e in echoes {
            e.await.unwrap();
        }
    });
    let mut senders = Vec::new();
    for i in 0..STREAMS {
        let opener = opener.clone();
        senders.push(tokio::spawn(async move {
            let stream = opener.open().await.expect("open");
            let payload: Vec<u8> = (0..BYTES_PER_STREAM)
                .map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8))
                .collect();
            let (mut reader, mut writer) = tokio::io::split(stream);
            let send = async {
                tokio::io::AsyncWriteExt::write_all(&mut writer, &payload)
                    .await
                    .expect("write");
                tokio::io::AsyncWriteExt::shutdown(&mut writer)
                    .await
                    .expect("shutdown");
            };
            let mut back = Vec::with_capacity(BYTES_PER_STREAM);
            let receive = async {
                tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut back)
                    .await
                    .expect("read echo");
            };
            tokio::join!(send, receive);
            assert!(
                back == payload,
                "stream {i} of side {seed} came back different"
            );
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    echo.await.unwrap();
}

/// A peer floods yamux pings and never reads what it is sent: the pongs owed to it must not pile
/// up without bound. The connection ends with an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_pings_and_never_reads_ends_the_connection() {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (read, write) = tokio::io::split(ours);
    let mux = Multiplexer::spawn(read, write, Mode::Client);
    // Their read half is kept, and never read.
    let (_unread, mut their_write) = tokio::io::split(theirs);
    // Ping frames: version 0, type 2, flags SYN, stream 0, an opaque value.
    let pings: Vec<u8> = (0..4096u32)
        .flat_map(|n| {
            [0u8, 2, 0, 1, 0, 0, 0, 0]
                .into_iter()
                .chain(n.to_be_bytes())
        })
        .collect();
    let flood = tokio::spawn(async move {
        while tokio::io::AsyncWriteExt::write_all(&mut their_write, &pings)
            .await
            .is_ok()
        {}
    });
    let ended = tokio::time::timeout(Duration::from_secs(120), mux.driver)
        .await
        .expect("the connection ends instead of queueing pongs for ever")
        .expect("the driver task");
    flood.abort();
    let error = ended.expect_err("a flood is an error").to_string();
    assert!(error.contains("it is not reading"), "{error}");
}
