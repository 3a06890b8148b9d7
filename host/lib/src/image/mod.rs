//! The worker image, built here without a Dockerfile or registry: the worker's exact closure,
//! /etc/passwd and /etc/group with nobody, empty /tmp and /models, nothing else.

pub mod oci;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::closure::Closure;
pub use oci::BuiltImage;

/// The repository every worker image is tagged in.
pub const REPOSITORY: &str = "tfsandbox-worker";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Closure(#[from] crate::closure::ClosureError),
    #[error("no OCI architecture for {0}")]
    Architecture(&'static str),
    #[error("image archive: {0}")]
    Io(String),
    #[error("image metadata: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    #[error("image metadata: {0}")]
    Json(#[from] serde_json::Error),
    #[error("loading the image into the engine: {0}")]
    Engine(String),
}

impl From<std::io::Error> for ImageError {
    fn from(error: std::io::Error) -> Self {
        ImageError::Io(error.to_string())
    }
}

/// What the image builder is doing, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Writing the image archive.
    Building,
    /// Sending the archive to the engine.
    Loading,
}

/// Told of the builder's progress: the stage, the bytes done so far and the stage's total. The
/// library draws nothing itself; the `tfsandbox` command draws bars with this.
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(Stage, u64, u64) + Send + Sync>);

impl Progress {
    pub fn new(report: impl Fn(Stage, u64, u64) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(report))
    }

    /// A counter for one stage: each call adds bytes and reports the sum.
    fn counter(
        progress: Option<&Progress>,
        stage: Stage,
        total: u64,
    ) -> impl Fn(u64) + Send + Sync {
        let progress = progress.cloned();
        let done = AtomicU64::new(0);
        if let Some(progress) = &progress {
            (progress.0)(stage, 0, total);
        }
        move |bytes| {
            if let Some(progress) = &progress {
                let sum = done.fetch_add(bytes, Ordering::Relaxed) + bytes;
                (progress.0)(stage, sum, total);
            }
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
}

/// The image name for a closure. The tag hashes each file's image path, host path, size and
/// modification time: cheap to compute on every start, and new whenever an input changes.
pub fn reference(closure: &Closure) -> String {
    let mut hasher = Sha256::new();
    for entry in &closure.entries {
        let modified = std::fs::metadata(&entry.host_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(format!(
            "{}\0{}\0{}\0{modified}\n",
            entry.image_path,
            entry.host_path.display(),
            entry.size
        ));
    }
    format!("{REPOSITORY}:{}", &hex::encode(hasher.finalize())[..16])
}

/// Writes the image archive to `out`, telling `progress` as it goes.
pub fn build_archive(
    closure: &Closure,
    reference: &str,
    out: &Path,
    progress: Option<&Progress>,
) -> Result<BuiltImage, ImageError> {
    let written = Progress::counter(progress, Stage::Building, closure.total_size());
    let file = std::fs::File::create(out)
        .map_err(|e| ImageError::Io(format!("{}: {e}", out.display())))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let built = oci::write_archive(closure, reference, &mut writer, &written)?;
    std::io::Write::flush(&mut writer)?;
    Ok(built)
}

/// Makes sure the engine has the image for `closure`; builds and loads it if not.
pub async fn ensure_loaded(
    docker: &Docker,
    closure: &Closure,
    progress: Option<&Progress>,
) -> Result<String, ImageError> {
    let reference = reference(closure);
    if docker.inspect_image(&reference).await.is_ok() {
        return Ok(reference);
    }
    tracing::info!(%reference, bytes = closure.total_size(), "building and loading the worker image");
    let archive = tempfile::Builder::new()
        .prefix("tfsandbox-image-")
        .suffix(".tar")
        .tempfile()?;
    let path = archive.path().to_path_buf();
    let closure_copy = closure.clone();
    let reference_copy = reference.clone();
    let progress_copy = progress.cloned();
    let built = tokio::task::spawn_blocking(move || {
        build_archive(
            &closure_copy,
            &reference_copy,
            &path,
            progress_copy.as_ref(),
        )
    })
    .await
    .map_err(|e| ImageError::Io(e.to_string()))??;
    load(docker, archive.path(), &built, &reference, progress).await?;
    Ok(reference)
}

/// Loads an archive into the engine and checks the engine saw the same image id.
pub async fn load(
    docker: &Docker,
    archive: &Path,
    built: &BuiltImage,
    reference: &str,
    progress: Option<&Progress>,
) -> Result<(), ImageError> {
    let file = tokio::fs::File::open(archive).await?;
    let sent = Progress::counter(progress, Stage::Loading, built.archive_size);
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            sent(chunk.len() as u64);
        }
    });
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut answers = docker.import_image_stream(options, body, None);
    while let Some(answer) = answers.next().await {
        answer.map_err(|e| ImageError::Engine(e.to_string()))?;
    }
    let image = docker
        .inspect_image(reference)
        .await
        .map_err(|e| ImageError::Engine(format!("{reference} is not there after loading: {e}")))?;
    if image.id.as_deref() != Some(built.config_digest.as_str()) {
        return Err(ImageError::Engine(format!(
            "the engine reports image id {:?}, the archive's config is {}",
            image.id, built.config_digest
        )));
    }
    Ok(())
}
