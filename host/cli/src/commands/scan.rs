//! `tfsandbox scan`: what a SavedModel's ops can do, read from its graph without running it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::out;

#[derive(clap::Args)]
pub struct ScanArgs {
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[arg(long = "deny-ops", value_name = "CAPABILITY,...", value_parser = tfsandbox::OpPolicy::parse)]
    deny_ops: Option<tfsandbox::OpPolicy>,
}

pub fn run(args: ScanArgs) -> Result<()> {
    let ScanArgs {
        model,
        json,
        deny_ops,
    } = args;
    let report = tfsandbox::scan::scan_dir(&model, &[], &Default::default())?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        write!(std::io::stdout().lock(), "{}", report.render())?;
    }
    if let Some(policy) = deny_ops {
        policy.check(&report)?;
    }
    Ok(())
}
