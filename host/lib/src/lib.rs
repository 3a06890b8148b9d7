//! tfsandbox: run TensorFlow SavedModels nobody here wrote in a sandbox, and call them as if local.
//!
//! ```no_run
//! # async fn demo() -> tfsandbox::Result<()> {
//! use tfsandbox::{Config, Sandbox, Tensor};
//! // Model folders are mounted when the sandbox starts: name them first.
//! let sandbox = Sandbox::start(Config::default().with_model("checks/fixtures/half_plus_two")).await?;
//! let model = sandbox.load_model("checks/fixtures/half_plus_two").await?;
//! let x = Tensor::new(&[3, 1], &[1.0f32, 2.0, 5.0])?;
//! let outputs = model.predict([("x", x)]).await?;
//! assert_eq!(outputs["y"].to_vec::<f32>()?, vec![2.5, 3.0, 4.5]);
//! # Ok(()) }
//! ```

pub mod closure;
mod config;
pub mod digest;
mod error;
pub mod events;
mod exit;
#[cfg(feature = "docker")]
pub mod image;
mod pool;
pub mod procfs;
pub mod runtime;
mod sandbox;
pub mod tensor;

pub use config::{
    Config, DockerProtocol, DockerSettings, GpuSettings, Gpus, GvisorSettings, Limits,
    ProcessSettings, RestartPolicy, RuntimeConfig, RuntimeKind, SessionConfig,
};
pub use error::{Error, GpuError, Result};
pub use events::{Event, Events};
pub use exit::WorkerExit;
pub use pool::Pool;
pub use sandbox::{LoadOptions, Model, Predict, Sandbox};
pub use tensor::{DType, Tensor, TensorError};
/// The protections the process runtime may be allowed to run without
/// (`ProcessSettings::allow_weaker`).
pub use tfsandbox_jailer::plan::Weaker;
/// The wire types, for callers that read signatures and worker reports.
pub use tfsandbox_proto::v1 as wire;
/// What a model can do, read before it runs (`tfsandbox scan`), and the op policy.
pub use tfsandbox_scan as scan;
pub use tfsandbox_scan::OpPolicy;
