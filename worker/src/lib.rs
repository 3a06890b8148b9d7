//! The worker's parts: a library for its binary (`main.rs`) and for the fuzz targets.

pub mod error;
pub mod gpus;
pub mod model;
pub mod posture;
pub mod service;
pub mod stdio;
pub mod tensor;
