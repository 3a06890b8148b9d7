//! `tfsandbox run`: one signature of a SavedModel, run in a sandbox, its outputs printed as JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tfsandbox::wire::{ModelMetadata, Signature};
use tfsandbox::{tensor, DType, Predict};

use super::sandbox::{start, SandboxArgs};
use crate::out;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The SavedModel directory.
    #[arg(long)]
    model: PathBuf,
    /// An input as NAME=JSON (nested arrays; the dtype comes from the signature), or
    /// NAME=@FILE for a JSON or NumPy `.npy` file (large inputs). Repeatable.
    #[arg(long = "input", value_name = "NAME=JSON|@FILE")]
    inputs: Vec<String>,
    /// The signature to run.
    #[arg(long, default_value = "serving_default")]
    signature: String,
    /// Only these outputs. Repeatable.
    #[arg(long = "output", value_name = "NAME")]
    outputs: Vec<String>,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub async fn run(args: RunArgs) -> Result<()> {
    let RunArgs {
        model,
        inputs,
        signature,
        outputs,
        sandbox,
    } = args;
    let sandbox = start(sandbox, Some(&model)).await?;
    let loaded = sandbox.load_model(&model).await?;
    let spec = find_signature(loaded.metadata(), &signature)?;
    let mut predict = Predict::default().signature(&signature).outputs(outputs);
    for input in &inputs {
        let (name, value) = input
            .split_once('=')
            .with_context(|| format!("--input '{input}' is not NAME=JSON or NAME=@FILE"))?;
        let dtype = input_dtype(spec, name)?;
        let tensor = read_input(value, dtype).with_context(|| format!("--input {name}"))?;
        predict.inputs.insert(name.to_string(), tensor);
    }
    let results = loaded.predict_with(predict).await?;
    let json: BTreeMap<String, Value> = results
        .iter()
        .map(|(k, t)| (k.clone(), tensor::to_json(t)))
        .collect();
    out!("{}", serde_json::to_string(&json)?);
    sandbox.shutdown().await;
    Ok(())
}

/// An input's value: JSON text, or `@FILE` holding JSON or a `.npy` array.
fn read_input(value: &str, dtype: DType) -> Result<tensor::Tensor> {
    let Some(path) = value.strip_prefix('@') else {
        let json: Value = serde_json::from_str(value).context("not JSON")?;
        return Ok(tensor::from_json(&json, dtype)?);
    };
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    if path.ends_with(".npy") {
        return Ok(tensor::from_npy(std::io::BufReader::new(file), dtype)?);
    }
    let json: Value = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{path} is not JSON"))?;
    Ok(tensor::from_json(&json, dtype)?)
}

fn find_signature<'a>(metadata: &'a ModelMetadata, name: &str) -> Result<&'a Signature> {
    match metadata.signatures.iter().find(|s| s.name == name) {
        Some(signature) => Ok(signature),
        None => {
            let names: Vec<&str> = metadata
                .signatures
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            bail!(
                "the model has no signature '{name}'; it has: {}",
                names.join(", ")
            )
        }
    }
}

fn input_dtype(signature: &Signature, name: &str) -> Result<DType> {
    let Some(spec) = signature.inputs.iter().find(|i| i.name == name) else {
        let names: Vec<&str> = signature.inputs.iter().map(|i| i.name.as_str()).collect();
        bail!(
            "signature '{}' has no input '{name}'; its inputs are: {}",
            signature.name,
            names.join(", ")
        );
    };
    DType::from_wire(spec.dtype).with_context(|| {
        format!(
            "input '{name}' has type {}, which tfsandbox does not carry",
            tfsandbox::tensor::tensorflow_name(spec.tensorflow_dtype)
        )
    })
}
