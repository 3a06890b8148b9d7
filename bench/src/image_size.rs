//! The size of the docker runtime's image against the closure it is built from.

use std::path::Path;

use anyhow::Result;
use tfsandbox::closure::{self, Closure, Variant};
use tfsandbox::image;

pub struct ImageSize {
    pub closure_bytes: u64,
    pub archive_bytes: u64,
    pub worker_bytes: u64,
}

pub fn measure(worker: &Path) -> Result<ImageSize> {
    // As the docker runtime builds it: the worker and the container's init.
    let closure = Closure::resolve(worker, Variant::Cpu, &[])?
        .with_init(&closure::init_beside(worker), &[])?;
    let archive = tempfile::NamedTempFile::new()?;
    let built = image::build_archive(&closure, &image::reference(&closure), archive.path(), None)?;
    Ok(ImageSize {
        closure_bytes: closure.total_size(),
        archive_bytes: built.archive_size,
        worker_bytes: std::fs::metadata(worker)?.len(),
    })
}
