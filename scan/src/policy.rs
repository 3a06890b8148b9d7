//! The op policy: capabilities a model may not use, checked before it is loaded.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::catalogue::{Capability, UnknownCapability};
use crate::scan::{Finding, Report};

/// Capabilities a model must not have. Empty: every model is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpPolicy {
    pub deny: BTreeSet<Capability>,
}

#[derive(Debug, thiserror::Error)]
#[error("the op policy denies {capability}: {location}{detail}{more}")]
pub struct Denied {
    pub capability: Capability,
    pub location: String,
    detail: String,
    more: String,
    pub findings: Vec<Finding>,
}

impl OpPolicy {
    /// What `tfsandbox serve` denies unless told otherwise: files, network, state outside the
    /// session and unknown ops. Printing (it reaches only the worker's log) and input-sized
    /// allocations (the sandbox's memory limit bounds them; text models have them) are allowed.
    pub fn serve_default() -> OpPolicy {
        OpPolicy {
            deny: [
                Capability::FileRead,
                Capability::FileWrite,
                Capability::FileList,
                Capability::Network,
                Capability::ProcessState,
                Capability::UnknownOp,
            ]
            .into(),
        }
    }

    /// Parses `file_read,network` (`none` for an empty policy).
    pub fn parse(list: &str) -> Result<OpPolicy, UnknownCapability> {
        if list.trim() == "none" || list.trim().is_empty() {
            return Ok(OpPolicy::default());
        }
        Ok(OpPolicy {
            deny: list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        self.deny.iter().map(|c| c.name().to_string()).collect()
    }

    /// Fails naming the first denied op (its node and function) and how many more there are.
    pub fn check(&self, report: &Report) -> Result<(), Denied> {
        let denied: Vec<Finding> = report
            .findings
            .iter()
            .filter(|f| self.deny.contains(&f.capability))
            .cloned()
            .collect();
        let Some(first) = denied.first() else {
            return Ok(());
        };
        Err(Denied {
            capability: first.capability,
            location: first.location(),
            detail: first
                .detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            more: match denied.len() {
                1 => String::new(),
                n => format!("; and {} more", n - 1),
            },
            findings: denied,
        })
    }
}
