//! The physical limits the transport is measured against: bytes through a pipe pair to a child
//! process (this program again, copying its stdin to its stdout) and back, with no framing at all.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tfsandbox_proto::transport::tuning::PIPE_BYTES;

use crate::stats::{median, Samples};

/// What a transport write is at most: the pipe's size, as the runtimes size it.
pub const WRITE_BYTES: usize = PIPE_BYTES;

/// The child's side: copy stdin to stdout until stdin ends.
pub fn serve_cat() -> Result<()> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; WRITE_BYTES];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        output.write_all(&buf[..n])?;
        // Stdout is line-buffered: a 1-byte ping would otherwise wait in its buffer.
        output.flush()?;
    }
}

/// A child that copies back what it is sent, over pipes sized as the runtimes size theirs.
struct Cat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl Cat {
    fn start() -> Result<Cat> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve-cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the raw pipe peer")?;
        let stdin = child.stdin.take().context("peer stdin")?;
        let stdout = child.stdout.take().context("peer stdout")?;
        rustix::pipe::fcntl_setpipe_size(&stdin, PIPE_BYTES)?;
        rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_BYTES)?;
        Ok(Cat {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("open until finish")
    }

    /// `bytes` there in writes of WRITE_BYTES (from a second thread) and back: the elapsed time.
    fn round_trip(&mut self, bytes: usize) -> Result<Duration> {
        let out = vec![7u8; WRITE_BYTES];
        let mut back = vec![0u8; WRITE_BYTES];
        let t = Instant::now();
        let stdin = self.stdin.as_mut().expect("open until finish");
        let stdout = &mut self.stdout;
        std::thread::scope(|scope| -> Result<()> {
            let writer = scope.spawn(move || -> std::io::Result<()> {
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(WRITE_BYTES);
                    stdin.write_all(&out[..n])?;
                    left -= n;
                }
                Ok(())
            });
            let mut got = 0;
            while got < bytes {
                let n = stdout.read(&mut back)?;
                anyhow::ensure!(n > 0, "the raw pipe peer ended early");
                got += n;
            }
            writer.join().expect("the writer thread")?;
            Ok(())
        })?;
        Ok(t.elapsed())
    }

    /// One byte there and back, from this thread: the round trip's elapsed time.
    fn ping(&mut self) -> Result<Duration> {
        let mut byte = [7u8];
        let t = Instant::now();
        self.stdin().write_all(&byte)?;
        self.stdout.read_exact(&mut byte)?;
        Ok(t.elapsed())
    }

    /// Ends the child by closing its stdin, and reaps it.
    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the raw pipe peer: {status}");
        Ok(())
    }
}

impl Drop for Cat {
    /// On an early return: no child is left running or unreaped (a no-op after finish).
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The raw pipe's figures: GiB/s of bytes in plus out at `mib` MiB each way, and the round trip
/// of one byte.
pub struct Limits {
    pub gib_s: f64,
    pub rtt: Samples,
}

pub fn measure(mib: usize, rounds: usize, rtt_calls: usize) -> Result<Limits> {
    let mut cat = Cat::start()?;
    let bytes = mib << 20;
    cat.round_trip(bytes)?;
    let times = (0..rounds)
        .map(|_| cat.round_trip(bytes))
        .collect::<Result<Vec<_>>>()?;
    let gib = (2 * bytes) as f64 / (1u64 << 30) as f64;
    let gib_s = gib / median(times).as_secs_f64();
    for _ in 0..rtt_calls.min(20) {
        cat.ping()?;
    }
    let start = Instant::now();
    let samples = (0..rtt_calls)
        .map(|_| cat.ping())
        .collect::<Result<Vec<_>>>()?;
    let rtt = Samples::new(samples, start.elapsed());
    cat.finish()?;
    Ok(Limits { gib_s, rtt })
}
