//! `tfsandbox inspect`: a SavedModel's signatures as a sandbox loads them; and
//! `tfsandbox inspect-sandbox`: how a sandbox is confined, as the worker sees it from inside.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;
use tfsandbox::wire::ModelMetadata;
use tfsandbox::DType;

use super::sandbox::{start, SandboxArgs};
use crate::out;

#[derive(clap::Args)]
pub struct InspectArgs {
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

#[derive(clap::Args)]
pub struct InspectSandboxArgs {
    /// A model folder to mount, as a real run would.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub async fn inspect(args: InspectArgs) -> Result<()> {
    let InspectArgs {
        model,
        json,
        sandbox,
    } = args;
    let sandbox = start(sandbox, Some(&model)).await?;
    let loaded = sandbox.load_model(&model).await?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&metadata_json(loaded.metadata()))?
        );
    } else {
        write!(
            std::io::stdout().lock(),
            "{}",
            metadata_text(loaded.metadata())
        )?;
    }
    sandbox.shutdown().await;
    Ok(())
}

pub async fn inspect_sandbox(args: InspectSandboxArgs) -> Result<()> {
    let InspectSandboxArgs {
        model,
        json,
        sandbox,
    } = args;
    let sandbox = start(sandbox, model.as_deref()).await?;
    let info = sandbox.info().await?;
    let posture = info.posture.clone().unwrap_or_default();
    let report = serde_json::json!({
        "worker_version": info.worker_version,
        "tensorflow_version": info.tensorflow_version,
        "pid_inside": info.pid,
        "uid": info.uid,
        "gid": info.gid,
        "cap_effective": posture.cap_effective,
        "cap_permitted": posture.cap_permitted,
        "cap_bounding": posture.cap_bounding,
        "no_new_privs": posture.no_new_privs,
        "seccomp_modes_per_thread": posture.seccomp_modes,
        "landlock": posture.landlock,
        "cgroup": posture.cgroup,
        "network_interfaces": posture.network_interfaces,
        "root_read_only": posture.root_read_only,
        "visible_models": posture.visible_models,
        "mounts": posture.mounts,
        "rlimits": posture.rlimits,
        "namespaces": posture.namespaces,
        "gpus": info.gpus.iter().map(|g| serde_json::json!({
            "name": g.name, "bus_id": g.bus_id, "tf_device": g.tf_device, "memory_bytes": g.memory_bytes,
        })).collect::<Vec<_>>(),
        "gpu_registered": info.gpu_registered,
    });
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Value::Object(fields) = &report {
        for (key, value) in fields {
            out!("{key:<26} {}", value);
        }
    }
    sandbox.shutdown().await;
    Ok(())
}

fn spec_text(spec: &tfsandbox::wire::TensorSpec) -> String {
    let dtype = DType::from_wire(spec.dtype).map_or_else(
        || tfsandbox::tensor::tensorflow_name(spec.tensorflow_dtype),
        |d| d.to_string(),
    );
    let shape = if spec.unknown_rank {
        "unknown rank".to_string()
    } else {
        format!("{:?}", spec.shape)
    };
    format!("{}: {dtype} {shape}", spec.name)
}

fn metadata_text(metadata: &ModelMetadata) -> String {
    let mut out = format!(
        "model '{}' ({}), tags {:?}\n",
        metadata.model_id, metadata.path, metadata.tags
    );
    for signature in &metadata.signatures {
        out += &format!(
            "signature '{}' ({})\n",
            signature.name, signature.method_name
        );
        for spec in &signature.inputs {
            out += &format!("  in  {}\n", spec_text(spec));
        }
        for spec in &signature.outputs {
            out += &format!("  out {}\n", spec_text(spec));
        }
    }
    out
}

fn metadata_json(metadata: &ModelMetadata) -> Value {
    let specs = |specs: &[tfsandbox::wire::TensorSpec]| -> Value {
        specs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "dtype": DType::from_wire(s.dtype).map(|d| d.to_string()),
                    "tf_dtype": tfsandbox::tensor::tensorflow_name(s.tensorflow_dtype),
                    "shape": if s.unknown_rank { Value::Null } else { s.shape.clone().into() },
                })
            })
            .collect()
    };
    serde_json::json!({
        "model_id": metadata.model_id,
        "path": metadata.path,
        "tags": metadata.tags,
        "signatures": metadata.signatures.iter().map(|s| serde_json::json!({
            "name": s.name,
            "method_name": s.method_name,
            "inputs": specs(&s.inputs),
            "outputs": specs(&s.outputs),
        })).collect::<Vec<_>>(),
    })
}
