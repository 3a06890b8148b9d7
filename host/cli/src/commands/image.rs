//! `tfsandbox image`: the worker image's closure, built into an archive and loaded into the engine;
//! and the progress bars the library's image builder reports to.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use tfsandbox::closure::{self, Closure, Variant};
use tfsandbox::image::{self, Progress, Stage};
use tfsandbox::Config;

use crate::out;

fn variant_parser() -> impl clap::builder::TypedValueParser<Value = Variant> {
    clap::builder::PossibleValuesParser::new(Variant::ALL.map(Variant::name)).map(|name| {
        *Variant::ALL
            .iter()
            .find(|v| v.name() == name)
            .expect("a name the library listed")
    })
}

/// Bars on stderr (hidden when it is not a terminal) for the image builder's stages.
pub fn progress_bars() -> Progress {
    let current: Arc<Mutex<Option<(Stage, ProgressBar)>>> = Arc::default();
    Progress::new(move |stage, done, total| {
        let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_none_or(|(shown, _)| *shown != stage) {
            if let Some((_, bar)) = current.take() {
                bar.finish_and_clear();
            }
            let message = match stage {
                Stage::Building => "building image",
                Stage::Loading => "loading image",
            };
            let bar = ProgressBar::new(total).with_message(message);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:16} {bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .expect("valid template"),
            );
            *current = Some((stage, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
        }
    })
}

#[derive(clap::Args)]
pub struct ClosureArgs {
    /// The worker binary (default: tfsandbox-worker beside this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Which libraries beyond DT_NEEDED the image carries.
    #[arg(long, value_parser = variant_parser(), default_value = "cpu")]
    variant: Variant,
    /// A folder to find dlopen()ed libraries in (the CUDA variant's). Repeatable.
    #[arg(long = "library-dir")]
    library_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List every file of the worker's closure, why it is there, and its size.
    Closure {
        #[command(flatten)]
        closure: ClosureArgs,
    },
    /// Build the image archive (OCI layout, also loadable by `docker load`).
    Build {
        #[command(flatten)]
        closure: ClosureArgs,
        /// Where to write the archive (default: a temporary file, with --load).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Load it into the Docker engine (skipped when the engine has it already).
        #[arg(long)]
        load: bool,
    },
}

fn resolve_closure(args: &ClosureArgs) -> Result<Closure> {
    let config = Config {
        worker_path: args.worker.clone(),
        ..Config::default()
    };
    let worker = config.resolve_worker_path()?;
    let closure = Closure::resolve(&worker, args.variant, &args.library_dirs)?;
    let init = closure::init_beside(&worker);
    Ok(closure.with_init(&init, &args.library_dirs)?)
}

pub async fn run(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Closure { closure } => {
            let closure = resolve_closure(&closure)?;
            for entry in &closure.entries {
                out!(
                    "{:>12}  {:<48}  {}  <- {}",
                    entry.size,
                    entry.image_path,
                    entry.reason,
                    entry.host_path.display()
                );
            }
            out!(
                "{:>12}  total, {} files; entry point: {}",
                closure.total_size(),
                closure.entries.len(),
                closure.image_entrypoint().join(" ")
            );
        }
        ImageCommand::Build { closure, out, load } => {
            if out.is_none() && !load {
                bail!("nothing to do: give --out FILE, --load, or both");
            }
            let closure = resolve_closure(&closure)?;
            let reference = image::reference(&closure);
            let temporary;
            let path = match out {
                Some(path) => path,
                None => {
                    temporary = tempfile::Builder::new()
                        .prefix("tfsandbox-image-")
                        .suffix(".tar")
                        .tempfile()?;
                    temporary.path().to_path_buf()
                }
            };
            let built = image::build_archive(&closure, &reference, &path, Some(&progress_bars()))?;
            out!("image {reference}");
            out!(
                "digest {} (config {})",
                built.manifest_digest,
                built.config_digest
            );
            out!(
                "archive {} bytes at {}; closure {} bytes",
                built.archive_size,
                path.display(),
                closure.total_size()
            );
            if load {
                let docker = bollard::Docker::connect_with_local_defaults()
                    .context("connecting to the Docker engine")?;
                if docker.inspect_image(&reference).await.is_ok() {
                    out!("the engine has {reference} already");
                } else {
                    image::load(&docker, &path, &built, &reference, Some(&progress_bars())).await?;
                    out!("loaded {reference}");
                }
            }
        }
    }
    Ok(())
}
