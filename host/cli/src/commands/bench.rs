//! `tfsandbox bench`: runs `tfsandbox-bench`, which lies beside this program. The bench links
//! TensorFlow for its in-process baseline; this program never does.

use anyhow::{bail, Context, Result};

pub async fn run(args: Vec<String>) -> Result<()> {
    // The bench links TensorFlow for its in-process baseline; this program never does.
    let bench = std::env::current_exe()?.with_file_name("tfsandbox-bench");
    let mut command = tokio::process::Command::new(&bench);
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        // TensorFlow's own start-up notes would bury the progress lines.
        command.env("TF_CPP_MIN_LOG_LEVEL", "2");
    }
    let status = command
        .args(args)
        .status()
        .await
        .with_context(|| format!("running {}", bench.display()))?;
    if !status.success() {
        bail!("{} ended with {status}", bench.display());
    }
    Ok(())
}
