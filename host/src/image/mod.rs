//! The worker image, built here without a Dockerfile or registry: the worker's exact closure,
//! /etc/passwd and /etc/group with nobody, empty /tmp and /models, nothing else.

pub mod closure;
pub mod oci;

use std::path::Path;

use bollard::Docker;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

pub use closure::{Closure, Variant};
pub use oci::BuiltImage;

/// The repository every worker image is tagged in.
pub const REPOSITORY: &str = "tfsandbox-worker";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("worker closure: {0}")]
    Closure(String),
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

/// Writes the image archive to `out` with a progress bar on stderr (hidden when not a terminal).
pub fn build_archive(
    closure: &Closure,
    reference: &str,
    out: &Path,
    show_progress: bool,
) -> Result<BuiltImage, ImageError> {
    let bar = bar(show_progress, closure.total_size(), "building image");
    let file = std::fs::File::create(out)
        .map_err(|e| ImageError::Io(format!("{}: {e}", out.display())))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let built = oci::write_archive(closure, reference, &mut writer, &|n| bar.inc(n))?;
    std::io::Write::flush(&mut writer)?;
    bar.finish_and_clear();
    Ok(built)
}

/// Makes sure the engine has the image for `closure`; builds and loads it if not.
pub async fn ensure_loaded(
    docker: &Docker,
    closure: &Closure,
    show_progress: bool,
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
    let built = tokio::task::spawn_blocking(move || {
        build_archive(&closure_copy, &reference_copy, &path, show_progress)
    })
    .await
    .map_err(|e| ImageError::Io(e.to_string()))??;
    load(docker, archive.path(), &built, &reference, show_progress).await?;
    Ok(reference)
}

/// Loads an archive into the engine and checks the engine saw the same image id.
pub async fn load(
    docker: &Docker,
    archive: &Path,
    built: &BuiltImage,
    reference: &str,
    show_progress: bool,
) -> Result<(), ImageError> {
    let file = tokio::fs::File::open(archive).await?;
    let bar = bar(show_progress, built.archive_size, "loading image");
    let progress = bar.clone();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            progress.inc(chunk.len() as u64);
        }
    });
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut answers = docker.import_image_stream(options, body, None);
    while let Some(answer) = answers.next().await {
        answer.map_err(|e| ImageError::Engine(e.to_string()))?;
    }
    bar.finish_and_clear();
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

fn bar(show: bool, total: u64, message: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{msg:16} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template"),
    );
    bar
}
