//! The bare limit: the same transport (yamux, HTTP/2, gRPC, prost) over a pipe pair, to a peer
//! that echoes a Predict's inputs as its outputs without TensorFlow or a sandbox.

use tfsandbox_proto::transport;
use tfsandbox_proto::v1::worker_client::WorkerClient;
use tfsandbox_proto::v1::worker_server::{Worker, WorkerServer};
use tfsandbox_proto::v1::{
    GetModelMetadataRequest, GetModelMetadataResponse, InfoRequest, InfoResponse, LoadModelRequest,
    LoadModelResponse, PredictRequest, PredictResponse, UnloadModelRequest, UnloadModelResponse,
};
use tokio::net::unix::pipe;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl Worker for Echo {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse::default()))
    }
    async fn load_model(
        &self,
        _: Request<LoadModelRequest>,
    ) -> Result<Response<LoadModelResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn get_model_metadata(
        &self,
        _: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        Ok(Response::new(PredictResponse {
            outputs: request.into_inner().inputs,
        }))
    }
    async fn unload_model(
        &self,
        _: Request<UnloadModelRequest>,
    ) -> Result<Response<UnloadModelResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

fn router() -> tonic::transport::server::Router {
    let limit = transport::tuning::DEFAULT_MAX_MESSAGE_BYTES;
    transport::server().add_service(
        WorkerServer::new(Echo)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
    )
}

fn client(channel: Channel) -> WorkerClient<Channel> {
    let limit = transport::tuning::DEFAULT_MAX_MESSAGE_BYTES;
    WorkerClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

/// Serves the echo on this process's stdin/stdout until stdin closes (the child's side of
/// [`start_child`]).
pub async fn serve_stdio() -> anyhow::Result<()> {
    use std::os::fd::AsFd;
    // As the worker does: the pipes themselves, non-blocking (tokio's stdin goes through a
    // blocking thread per read).
    let input = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned()?;
    transport::serve(
        pipe::Receiver::from_file(std::fs::File::from(input))?,
        pipe::Sender::from_file(std::fs::File::from(output))?,
        router(),
        Box::pin(futures::future::pending()),
    )
    .await?;
    Ok(())
}

/// A client of an echo peer in a child process (this program again), over its stdin/stdout:
/// two processes and a pipe pair, as with a sandbox, but nothing else.
pub async fn start_child() -> anyhow::Result<(WorkerClient<Channel>, tokio::process::Child)> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-echo")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    rustix::pipe::fcntl_setpipe_size(&stdin, transport::tuning::PIPE_BYTES)?;
    rustix::pipe::fcntl_setpipe_size(&stdout, transport::tuning::PIPE_BYTES)?;
    let (channel, _driver) = transport::connect(stdout, stdin).await?;
    Ok((client(channel), child))
}

/// A client of an echo peer in this process, served on the far ends of two OS pipes.
pub async fn start() -> anyhow::Result<WorkerClient<Channel>> {
    let (to_echo, echo_in) = pipe::pipe()?;
    let (echo_out, from_echo) = pipe::pipe()?;
    // Sized as the process runtime sizes its pipes.
    rustix::pipe::fcntl_setpipe_size(&to_echo, transport::tuning::PIPE_BYTES)?;
    rustix::pipe::fcntl_setpipe_size(&echo_out, transport::tuning::PIPE_BYTES)?;
    tokio::spawn(transport::serve(
        echo_in,
        echo_out,
        router(),
        Box::pin(futures::future::pending()),
    ));
    let (channel, _driver) = transport::connect(from_echo, to_echo).await?;
    Ok(client(channel))
}
