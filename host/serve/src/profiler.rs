//! TensorFlow's profiler service (`tensorflow.ProfilerService`), which TensorFlow Serving serves on
//! its gRPC port: here every call is answered UNIMPLEMENTED saying why, so a profiler client
//! fails at once with a clear reason instead of a bare "unknown service".

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;

const WHY: &str = "TensorFlow's profiler is not supported by tfsandbox serve: the model's TensorFlow runs inside the sandbox, where no profiler client reaches it";

#[derive(Debug, Clone, Copy)]
pub struct NoProfiler;

impl tonic::server::NamedService for NoProfiler {
    const NAME: &'static str = "tensorflow.ProfilerService";
}

impl tower::Service<http::Request<Body>> for NoProfiler {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        ready(Ok(tonic::Status::unimplemented(WHY).into_http()))
    }
}
