//! A gRPC channel to serve's Unix socket (`--grpc_socket_path`), as the checks and the bench
//! call it; tonic connects to TCP by itself.

/// A channel to the server's Unix socket at `path`.
pub async fn unix_channel(
    path: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
