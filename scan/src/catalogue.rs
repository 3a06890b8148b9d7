//! The reviewed op table (`ops.tsv`): what each op of the shipped registry can do.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// What a model's op can do beyond computing on its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    FileRead,
    FileWrite,
    FileList,
    Network,
    /// State outside the model's own session (TPU system, file system configuration, ...).
    ProcessState,
    Print,
    /// An allocation sized by a tensor that is neither constant nor taken from shapes.
    Alloc,
    /// An op the registry does not know (custom) or whose effect the graph does not show.
    UnknownOp,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::FileRead,
        Capability::FileWrite,
        Capability::FileList,
        Capability::Network,
        Capability::ProcessState,
        Capability::Print,
        Capability::Alloc,
        Capability::UnknownOp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::FileRead => "file_read",
            Capability::FileWrite => "file_write",
            Capability::FileList => "file_list",
            Capability::Network => "network",
            Capability::ProcessState => "process_state",
            Capability::Print => "print",
            Capability::Alloc => "alloc",
            Capability::UnknownOp => "unknown_op",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown capability '{0}'; known: file_read, file_write, file_list, network, process_state, print, alloc, unknown_op")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| UnknownCapability(s.to_string()))
    }
}

/// One op's row of the table.
#[derive(Debug, Clone, Default)]
pub struct OpEntry {
    pub capabilities: Vec<Capability>,
    /// Inputs that are file paths: the capabilities hold unless each is the model's own file.
    pub path_inputs: Vec<usize>,
    /// Inputs that size an allocation: flagged unless constant or taken from shapes.
    pub size_inputs: Vec<usize>,
}

#[derive(Debug)]
pub struct Catalogue {
    ops: HashMap<String, OpEntry>,
}

const TABLE: &str = include_str!("ops.tsv");

impl Catalogue {
    /// The table for the libtensorflow tfsandbox ships.
    pub fn shipped() -> &'static Catalogue {
        static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
        CATALOGUE.get_or_init(|| {
            // The table is part of the source: a malformed row is a build mistake, caught by
            // the catalogue's own test.
            Catalogue::parse(TABLE).expect("scan/src/ops.tsv is well-formed")
        })
    }

    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let mut ops = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("ops.tsv line {}: {why}: {line:?}", n + 1);
            let mut columns = line.split('\t');
            let name = columns.next().ok_or_else(|| bad("no op"))?;
            let caps = columns.next().ok_or_else(|| bad("no capabilities"))?;
            let mut entry = OpEntry::default();
            if caps != "-" {
                for cap in caps.split(',') {
                    entry.capabilities.push(
                        cap.parse()
                            .map_err(|e: UnknownCapability| bad(&e.to_string()))?,
                    );
                }
            }
            if let Some(args) = columns.next() {
                let (kind, list) = args
                    .split_once('=')
                    .ok_or_else(|| bad("bad inputs column"))?;
                let indices = list
                    .split(',')
                    .map(|i| i.parse::<usize>().map_err(|_| bad("bad input index")))
                    .collect::<Result<Vec<_>, _>>()?;
                match kind {
                    "path" => entry.path_inputs = indices,
                    "size" => entry.size_inputs = indices,
                    _ => return Err(bad("inputs column is neither path= nor size=")),
                }
            }
            if ops.insert(name.to_string(), entry).is_some() {
                return Err(bad("op listed twice"));
            }
        }
        Ok(Catalogue { ops })
    }

    pub fn get(&self, op: &str) -> Option<&OpEntry> {
        self.ops.get(op)
    }

    pub fn op_names(&self) -> impl Iterator<Item = &str> {
        self.ops.keys().map(String::as_str)
    }
}
