//! `tfsandbox soak`: sandboxes started and stopped, dropped and crashed in turn, then a count of
//! what they left behind (the run and its census are in the crate's library, `soak`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::sandbox::{sandbox_config, SandboxArgs};
use crate::out;

#[derive(clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 100)]
    cycles: u64,
    /// A model folder each cycle loads (unset: the worker alone).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub async fn run(args: SoakArgs) -> Result<()> {
    let SoakArgs {
        cycles,
        model,
        sandbox,
    } = args;
    let config = sandbox_config(sandbox, model.as_deref())?;
    let bar = indicatif::ProgressBar::new(cycles).with_style(
        indicatif::ProgressStyle::with_template("soak {pos}/{len} cycles {wide_bar} {elapsed}")?,
    );
    let report = tfsandbox_cli::soak::run(&config, cycles, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    out!(
        "temp dirs left {}, cgroups left {}, runsc state left {}, {:.1} s in all",
        report.temp_dirs,
        report.cgroups,
        report.runsc_state,
        report.elapsed.as_secs_f64()
    );
    out!("{}", report.line());
    Ok(())
}
