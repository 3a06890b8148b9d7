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
use tonic::transport::{Channel, Server};
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

/// A client of an echo peer served on the far ends of two OS pipes.
pub async fn start() -> anyhow::Result<WorkerClient<Channel>> {
    let (to_echo, echo_in) = pipe::pipe()?;
    let (echo_out, from_echo) = pipe::pipe()?;
    // Sized as the process runtime sizes its pipes.
    rustix::pipe::fcntl_setpipe_size(&to_echo, transport::tuning::PIPE_BYTES)?;
    rustix::pipe::fcntl_setpipe_size(&echo_out, transport::tuning::PIPE_BYTES)?;
    let limit = transport::tuning::DEFAULT_MAX_MESSAGE_BYTES;
    let router = Server::builder()
        .initial_stream_window_size(transport::tuning::H2_STREAM_WINDOW)
        .initial_connection_window_size(transport::tuning::H2_CONNECTION_WINDOW)
        .add_service(
            WorkerServer::new(Echo)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        );
    tokio::spawn(transport::serve(
        echo_in,
        echo_out,
        router,
        Box::pin(futures::future::pending()),
    ));
    let (channel, _driver) = transport::connect(from_echo, to_echo).await?;
    Ok(WorkerClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit))
}
