//! The worker's stdin/stdout carry the protocol and nothing else.
//!
//! TensorFlow (or a model's `tf.print` to stdout) may write to fd 1 at any time; one stray byte
//! would corrupt the stream. So the protocol pipes move to fresh descriptors, fd 1 becomes a copy of
//! stderr and fd 0 reads /dev/null, before any TensorFlow code runs.
//!
//! Where the host names protocol FIFOs (`worker_env::PROTOCOL_IN`, `PROTOCOL_OUT`: the docker
//! runtime), those are the protocol's descriptors instead of fds 0 and 1, which are replaced all
//! the same: nothing of the worker's then reaches the stdout the engine attached.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{open, Mode, OFlags};
use rustix::io::{dup, fcntl_setfd, FdFlags};
use rustix::stdio::{dup2_stdin, dup2_stdout, stderr, stdin, stdout};
use tokio::net::unix::pipe;

use tfsandbox_proto::transport::tuning::PIPE_BYTES;

pub struct ProtocolPipes {
    pub input: pipe::Receiver,
    pub output: pipe::Sender,
}

/// Moves the protocol off fds 0 and 1 (or opens the host's FIFOs). Call first thing in `main`,
/// before any thread starts.
pub fn take() -> io::Result<(OwnedFd, OwnedFd)> {
    let (input, output) = match tfsandbox_proto::open_protocol_fifos().map_err(io::Error::other)? {
        Some((input, output)) => (input.into(), output.into()),
        None => {
            let input = dup(stdin())?;
            let output = dup(stdout())?;
            fcntl_setfd(&input, FdFlags::CLOEXEC)?;
            fcntl_setfd(&output, FdFlags::CLOEXEC)?;
            (input, output)
        }
    };
    dup2_stdout(stderr())?;
    let null = open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    dup2_stdin(&null)?;
    Ok((input, output))
}

/// Wraps the moved descriptors for tokio; they must be pipes (child pipes or the engine's FIFOs).
pub fn into_async((input, output): (OwnedFd, OwnedFd)) -> io::Result<ProtocolPipes> {
    for fd in [&input, &output] {
        // Best effort: a smaller buffer is slower, not wrong.
        let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BYTES);
    }
    Ok(ProtocolPipes {
        input: pipe::Receiver::from_owned_fd(input)?,
        output: pipe::Sender::from_owned_fd(output)?,
    })
}
