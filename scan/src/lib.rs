//! What a TensorFlow SavedModel can do, read from its graph before anything runs: the reviewed
//! op catalogue (`ops.tsv`), the scan of a MetaGraphDef and its function library, and the op
//! policy the worker enforces at load.

pub mod catalogue;
pub mod policy;
pub mod scan;

pub use catalogue::{Capability, Catalogue, UnknownCapability};
pub use policy::{Denied, OpPolicy};
pub use scan::{
    decode_saved_model, read_saved_model, scan, scan_dir, Finding, Report, ScanError, ScanLimits,
};

/// The TensorFlow messages a scan reads (our own wire-compatible subset).
pub mod tf {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}
