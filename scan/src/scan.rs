//! Reading a SavedModel's MetaGraphDef and finding what each of its ops can do.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::Serialize;

use crate::catalogue::{Capability, Catalogue};
use crate::tf::{attr_value, FunctionDef, MetaGraphDef, NodeDef, SavedModel};

/// Bounds on what a scan reads.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// The largest saved_model.pb read (TensorFlow itself stops at 2 GiB, protobuf's limit).
    pub max_file_bytes: u64,
    /// The most signatures whose reach is traced (each walks the graph once).
    pub max_signatures: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_file_bytes: 1 << 30,
            max_signatures: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{path}' holds no saved_model.pb (a scan reads the binary form only)")]
    NoSavedModel { path: PathBuf },
    /// TensorFlow's loader also reads these forms; which it picks is not the scan's to guess.
    #[error("'{path}' holds {other} besides saved_model.pb; a scan reads only saved_model.pb")]
    OtherForm { path: PathBuf, other: &'static str },
    #[error("'{path}' is {size} bytes, over the scan's limit of {limit} bytes")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("'{path}' is not a valid SavedModel protobuf: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("no MetaGraph has tags {wanted:?}; the model has: {available:?}")]
    NoMetaGraph {
        wanted: Vec<String>,
        available: Vec<Vec<String>>,
    },
    #[error("the model has {count} signatures, over the scan's limit of {limit}")]
    TooManySignatures { count: usize, limit: usize },
}

/// One op that has a capability.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub capability: Capability,
    pub op: String,
    pub node: String,
    /// The library function holding the node; none for the top-level graph.
    pub function: Option<String>,
    /// Why it is flagged, when the table alone does not say (a path's origin, an attribute).
    pub detail: Option<String>,
    /// The signatures that reach the node, and `<load>` when loading the model runs it.
    pub reached_from: Vec<String>,
}

impl Finding {
    /// `op 'ReadFile', node 'ReadFile' in function '__inference_f_12'`
    pub fn location(&self) -> String {
        match &self.function {
            Some(f) => format!("op '{}', node '{}' in function '{}'", self.op, self.node, f),
            None => format!("op '{}', node '{}' in the graph", self.op, self.node),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tags: Vec<String>,
    pub nodes: usize,
    pub functions: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        self.findings.iter().map(|f| f.capability).collect()
    }

    /// The findings as lines for people: one block per capability.
    pub fn render(&self) -> String {
        let mut out = format!(
            "tags {:?}: {} nodes, {} functions\n",
            self.tags, self.nodes, self.functions
        );
        if self.findings.is_empty() {
            out.push_str("no capabilities found: every op only computes\n");
            return out;
        }
        for cap in self.capabilities() {
            out.push_str(&format!("{cap}:\n"));
            for f in self.findings.iter().filter(|f| f.capability == cap) {
                out.push_str(&format!("  {}", f.location()));
                if let Some(detail) = &f.detail {
                    out.push_str(&format!(" ({detail})"));
                }
                if f.reached_from.is_empty() {
                    out.push_str("; reached from no signature\n");
                } else {
                    out.push_str(&format!("; reached from {}\n", f.reached_from.join(", ")));
                }
            }
        }
        out
    }
}

/// Reads `<dir>/saved_model.pb` within the limits.
pub fn read_saved_model(dir: &Path, limits: &ScanLimits) -> Result<SavedModel, ScanError> {
    for other in ["saved_model.pbtxt", "saved_model.cpb"] {
        if dir.join(other).exists() {
            return Err(ScanError::OtherForm {
                path: dir.to_path_buf(),
                other,
            });
        }
    }
    let path = dir.join("saved_model.pb");
    let read_err = |source| ScanError::Read {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ScanError::NoSavedModel {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(read_err(e)),
    };
    let size = file.metadata().map_err(read_err)?.len();
    if size > limits.max_file_bytes {
        return Err(ScanError::TooLarge {
            path,
            size,
            limit: limits.max_file_bytes,
        });
    }
    // `take` bounds the read even if the file grows after the size was checked.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ScanError::TooLarge {
            path,
            size: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    decode_saved_model(&bytes).map_err(|source| ScanError::Decode { path, source })
}

/// Decodes saved_model.pb bytes. prost bounds nesting (depth 100) and allocates no more than
/// the input's length in elements, so hostile bytes fail cleanly.
pub fn decode_saved_model(bytes: &[u8]) -> Result<SavedModel, prost::DecodeError> {
    SavedModel::decode(bytes)
}

/// Scans the MetaGraph of `dir` with `tags` (empty: `serve`).
pub fn scan_dir(dir: &Path, tags: &[String], limits: &ScanLimits) -> Result<Report, ScanError> {
    let model = read_saved_model(dir, limits)?;
    scan(&model, tags, limits)
}

/// Scans the MetaGraph with `tags` (empty: `serve`) against the shipped catalogue.
pub fn scan(model: &SavedModel, tags: &[String], limits: &ScanLimits) -> Result<Report, ScanError> {
    let wanted: Vec<String> = if tags.is_empty() {
        vec!["serve".to_string()]
    } else {
        tags.to_vec()
    };
    let wanted_set: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
    let meta = model
        .meta_graphs
        .iter()
        .find(|m| {
            let have: BTreeSet<&str> = m
                .meta_info_def
                .as_ref()
                .map(|i| i.tags.iter().map(String::as_str).collect())
                .unwrap_or_default();
            have == wanted_set
        })
        .ok_or_else(|| ScanError::NoMetaGraph {
            wanted: wanted.clone(),
            available: model
                .meta_graphs
                .iter()
                .map(|m| {
                    m.meta_info_def
                        .as_ref()
                        .map(|i| i.tags.clone())
                        .unwrap_or_default()
                })
                .collect(),
        })?;
    if meta.signature_def.len() > limits.max_signatures {
        return Err(ScanError::TooManySignatures {
            count: meta.signature_def.len(),
            limit: limits.max_signatures,
        });
    }
    let graph = Graph::new(meta);
    let mut findings = graph.findings(Catalogue::shipped());
    let reach = graph.reach();
    for f in &mut findings {
        f.reached_from = reach
            .get(&(f.function.clone(), f.node.clone()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
    }
    findings.sort();
    findings.dedup();
    Ok(Report {
        tags: wanted,
        nodes: graph.nodes.len(),
        functions: graph.functions.len(),
        findings,
    })
}

/// Where a string or size value comes from, as far as the scan can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The model's own variables or assets (the loader feeds their paths).
    Own,
    /// A constant piece (a relative suffix without `..`; for sizes: any constant or shape).
    Safe,
    /// Anything else: an input, a computed value, an absolute path.
    Other,
}

fn meet(a: Origin, b: Origin) -> Origin {
    if a == b {
        a
    } else {
        Origin::Other
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Domain {
    Path,
    Size,
}

/// Deeper chains than this are judged `Other`: a hostile graph could nest without end.
const MAX_TRACE_DEPTH: usize = 200;

const CALL_OPS: &[&str] = &["PartitionedCall", "StatefulPartitionedCall"];

/// A place in the model: the top-level graph (`None`) or a library function.
type Scope<'a> = Option<&'a str>;

struct Graph<'a> {
    meta: &'a MetaGraphDef,
    nodes: HashMap<&'a str, &'a NodeDef>,
    functions: HashMap<&'a str, &'a FunctionDef>,
    function_nodes: HashMap<&'a str, HashMap<&'a str, &'a NodeDef>>,
    /// For each function, the nodes that call it with its arguments in order.
    call_sites: HashMap<&'a str, Vec<(Scope<'a>, &'a NodeDef)>>,
    /// Functions referenced other than by a plain call (loop bodies, branches, datasets).
    other_uses: HashSet<&'a str>,
    /// Graph nodes whose value the loader replaces with a path of the model's own.
    own_paths: HashSet<&'a str>,
}

fn tensor_node(name: &str) -> &str {
    let name = name.strip_prefix('^').unwrap_or(name);
    name.split(':').next().unwrap_or(name)
}

/// The function names an attribute refers to.
fn attr_functions(value: &crate::tf::AttrValue) -> Vec<&str> {
    match &value.value {
        Some(attr_value::Value::Func(f)) => {
            let mut names = vec![f.name.as_str()];
            for v in f.attr.values() {
                names.extend(attr_functions(v));
            }
            names
        }
        Some(attr_value::Value::List(list)) => list.func.iter().map(|f| f.name.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn data_inputs(node: &NodeDef) -> impl Iterator<Item = &str> {
    node.input
        .iter()
        .map(String::as_str)
        .filter(|i| !i.starts_with('^'))
}

impl<'a> Graph<'a> {
    fn new(meta: &'a MetaGraphDef) -> Self {
        let graph_nodes: &'a [NodeDef] = meta.graph_def.as_ref().map_or(&[], |g| &g.node);
        let library: &'a [FunctionDef] = meta
            .graph_def
            .as_ref()
            .and_then(|g| g.library.as_ref())
            .map_or(&[], |l| &l.function);
        let nodes = graph_nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut functions = HashMap::new();
        let mut function_nodes = HashMap::new();
        for f in library {
            let name = f.signature.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            functions.insert(name, f);
            function_nodes.insert(
                name,
                f.node_def.iter().map(|n| (n.name.as_str(), n)).collect(),
            );
        }
        let mut graph = Graph {
            meta,
            nodes,
            functions,
            function_nodes,
            call_sites: HashMap::new(),
            other_uses: HashSet::new(),
            own_paths: HashSet::new(),
        };
        let scopes: Vec<(Scope<'a>, &'a [NodeDef])> = std::iter::once((None, graph_nodes))
            .chain(library.iter().map(|f| {
                (
                    Some(f.signature.as_ref().map(|s| s.name.as_str()).unwrap_or("")),
                    f.node_def.as_slice(),
                )
            }))
            .collect();
        for (scope, nodes) in scopes {
            for node in nodes {
                if graph.functions.contains_key(node.op.as_str()) {
                    graph
                        .call_sites
                        .entry(node.op.as_str())
                        .or_default()
                        .push((scope, node));
                }
                for (key, value) in &node.attr {
                    for f in attr_functions(value) {
                        if CALL_OPS.contains(&node.op.as_str()) && key == "f" {
                            graph.call_sites.entry(f).or_default().push((scope, node));
                        } else {
                            graph.other_uses.insert(f);
                        }
                    }
                }
            }
        }
        if let Some(saver) = &meta.saver_def {
            graph
                .own_paths
                .insert(tensor_node(&saver.filename_tensor_name));
        }
        for asset in &meta.asset_file_def {
            if let Some(crate::tf::tensor_info::Encoding::Name(name)) =
                asset.tensor_info.as_ref().and_then(|t| t.encoding.as_ref())
            {
                graph.own_paths.insert(tensor_node(name));
            }
        }
        graph
    }

    fn scopes(&self) -> Vec<(Scope<'a>, Vec<&'a NodeDef>)> {
        let mut scopes = Vec::new();
        if let Some(g) = &self.meta.graph_def {
            scopes.push((None, g.node.iter().collect()));
            if let Some(lib) = &g.library {
                for f in &lib.function {
                    let name = f.signature.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                    scopes.push((Some(name), f.node_def.iter().collect()));
                }
            }
        }
        scopes
    }

    /// Every node of the graph and of every library function, judged against the table.
    fn findings(&self, catalogue: &Catalogue) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut memo = HashMap::new();
        for (scope, nodes) in self.scopes() {
            for node in nodes {
                let finding = |capability, detail: Option<String>| Finding {
                    capability,
                    op: node.op.clone(),
                    node: node.name.clone(),
                    function: scope.map(str::to_string),
                    detail,
                    reached_from: Vec::new(),
                };
                for value in node.attr.values() {
                    for f in attr_functions(value) {
                        if f.is_empty() || self.functions.contains_key(f) {
                            continue;
                        }
                        // A function-valued attribute may name a registered op (SymbolicGradient,
                        // a call of a primitive): it has that op's capabilities, whatever its
                        // inputs.
                        match catalogue.get(f) {
                            Some(entry) => {
                                for &cap in &entry.capabilities {
                                    findings.push(finding(
                                        cap,
                                        Some(format!("calls op '{f}' through an attribute")),
                                    ));
                                }
                            }
                            None => findings.push(finding(
                                Capability::UnknownOp,
                                Some(format!("names function '{f}', which the library lacks")),
                            )),
                        }
                    }
                }
                if self.functions.contains_key(node.op.as_str()) {
                    continue;
                }
                let Some(entry) = catalogue.get(&node.op) else {
                    findings.push(finding(
                        Capability::UnknownOp,
                        Some("not in the op registry".to_string()),
                    ));
                    continue;
                };
                let inputs: Vec<&str> = data_inputs(node).collect();
                let mut flagged = true;
                let mut detail = None;
                if !entry.path_inputs.is_empty() {
                    let origins: Vec<Origin> = entry
                        .path_inputs
                        .iter()
                        .map(|&i| match inputs.get(i) {
                            Some(input) => self.origin(Domain::Path, scope, input, 0, &mut memo),
                            None => Origin::Other,
                        })
                        .collect();
                    flagged = origins.iter().any(|o| *o != Origin::Own);
                    if flagged {
                        detail =
                            Some("path is not the model's own variables or assets".to_string());
                    }
                }
                if !entry.size_inputs.is_empty() {
                    let unbounded = entry.size_inputs.iter().find(|&&i| match inputs.get(i) {
                        Some(input) => {
                            self.origin(Domain::Size, scope, input, 0, &mut memo) == Origin::Other
                        }
                        None => false,
                    });
                    flagged = unbounded.is_some();
                    if let Some(i) = unbounded {
                        detail = Some(format!(
                            "size input {i} is neither constant nor taken from shapes"
                        ));
                    }
                }
                if flagged {
                    for &cap in &entry.capabilities {
                        findings.push(finding(cap, detail.clone()));
                    }
                }
                if node.op == "PrintV2" {
                    if let Some(attr_value::Value::S(stream)) = node
                        .attr
                        .get("output_stream")
                        .and_then(|v| v.value.as_ref())
                    {
                        if stream.starts_with(b"file://") {
                            findings.push(finding(
                                Capability::FileWrite,
                                Some(format!(
                                    "output_stream '{}'",
                                    String::from_utf8_lossy(stream)
                                )),
                            ));
                        }
                    }
                }
            }
        }
        findings
    }

    fn node(&self, scope: Scope<'a>, name: &str) -> Option<&'a NodeDef> {
        match scope {
            None => self.nodes.get(name).copied(),
            Some(f) => self.function_nodes.get(f)?.get(name).copied(),
        }
    }

    /// Where the tensor `input` (in `scope`'s naming) comes from.
    fn origin(
        &self,
        domain: Domain,
        scope: Scope<'a>,
        input: &str,
        depth: usize,
        memo: &mut HashMap<(Domain, Option<String>, String), Origin>,
    ) -> Origin {
        if depth > MAX_TRACE_DEPTH {
            return Origin::Other;
        }
        let key = (domain, scope.map(str::to_string), input.to_string());
        if let Some(o) = memo.get(&key) {
            return *o;
        }
        // Cycles (loops) are judged `Other` until proven otherwise.
        memo.insert(key.clone(), Origin::Other);
        let origin = self.trace(domain, scope, input, depth, memo);
        memo.insert(key, origin);
        origin
    }

    fn trace(
        &self,
        domain: Domain,
        scope: Scope<'a>,
        input: &str,
        depth: usize,
        memo: &mut HashMap<(Domain, Option<String>, String), Origin>,
    ) -> Origin {
        let name = tensor_node(input);
        let Some(node) = self.node(scope, name) else {
            // In a function, a name that is no node is one of its arguments.
            return match scope {
                Some(f) => self.argument_origin(domain, f, name, depth, memo),
                None => Origin::Other,
            };
        };
        let inputs: Vec<&str> = data_inputs(node).collect();
        let mut of = |i: usize| match inputs.get(i) {
            Some(input) => self.origin(domain, scope, input, depth + 1, memo),
            None => Origin::Other,
        };
        let own = || scope.is_none() && self.own_paths.contains(name);
        match (domain, node.op.as_str()) {
            (Domain::Path, _) if own() => Origin::Own,
            (_, "Identity" | "Snapshot" | "StopGradient") => of(0),
            (Domain::Path, "Const") => match const_string(node) {
                Some(s) if !s.starts_with('/') && !s.contains("..") => Origin::Safe,
                _ => Origin::Other,
            },
            (Domain::Path, "StringJoin") => {
                let separator_ok = match node.attr.get("separator").and_then(|v| v.value.as_ref()) {
                    Some(attr_value::Value::S(s)) => !s.windows(2).any(|w| w == b".."),
                    _ => true,
                };
                let origins: Vec<Origin> = (0..inputs.len()).map(&mut of).collect();
                match origins.split_first() {
                    Some((first, rest)) if separator_ok => {
                        if rest.iter().all(|o| *o != Origin::Other)
                            && (*first == Origin::Own || *first == Origin::Safe)
                        {
                            if *first == Origin::Own {
                                Origin::Own
                            } else if rest.iter().all(|o| *o == Origin::Safe) {
                                Origin::Safe
                            } else {
                                Origin::Other
                            }
                        } else {
                            Origin::Other
                        }
                    }
                    _ => Origin::Other,
                }
            }
            // TF2 keeps an asset's path in a variable that the init op assigns from the
            // loader-fed placeholder.
            (Domain::Path, "ReadVariableOp") if scope.is_none() => match inputs.first() {
                Some(handle) => self.variable_origin(handle, depth, memo),
                None => Origin::Other,
            },
            (Domain::Path, "ShardedFilename") => match of(0) {
                Origin::Own => Origin::Own,
                _ => Origin::Other,
            },
            (Domain::Path, "Pack") => (0..inputs.len())
                .map(&mut of)
                .reduce(meet)
                .unwrap_or(Origin::Other),
            (_, "Select" | "SelectV2") => {
                let a = of(1);
                let b = of(2);
                meet(a, b)
            }
            (Domain::Size, "Const" | "Shape" | "ShapeN" | "Size" | "Rank" | "TensorListLength") => {
                Origin::Safe
            }
            (
                Domain::Size,
                "Cast" | "StridedSlice" | "Slice" | "GatherV2" | "Gather" | "Squeeze"
                | "ExpandDims" | "Reshape",
            ) => of(0),
            (
                Domain::Size,
                "Pack" | "ConcatV2" | "Concat" | "Add" | "AddV2" | "Sub" | "FloorDiv" | "Maximum"
                | "Minimum",
            ) => {
                let count = inputs.len();
                // ConcatV2's last input is the axis, Concat's first: neither sizes anything.
                let range = match node.op.as_str() {
                    "ConcatV2" => 0..count.saturating_sub(1),
                    "Concat" => 1.min(count)..count,
                    _ => 0..count,
                };
                if range.clone().all(|i| of(i) == Origin::Safe) {
                    Origin::Safe
                } else {
                    Origin::Other
                }
            }
            _ => Origin::Other,
        }
    }

    /// What a top-level resource variable holds: `Own` only if no other op can alias it (by
    /// shared_name) or write it (by getting its handle), and every assignment is `Own`.
    fn variable_origin(
        &self,
        handle: &str,
        depth: usize,
        memo: &mut HashMap<(Domain, Option<String>, String), Origin>,
    ) -> Origin {
        let name = tensor_node(handle);
        let Some(var) = self.nodes.get(name).filter(|n| n.op == "VarHandleOp") else {
            return Origin::Other;
        };
        let shared_name =
            |n: &NodeDef| match n.attr.get("shared_name").and_then(|v| v.value.as_ref()) {
                Some(attr_value::Value::S(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
        let mine = shared_name(var);
        let aliases = self
            .scopes()
            .into_iter()
            .flat_map(|(_, nodes)| nodes)
            .filter(|n| n.op == "VarHandleOp" && mine.is_some() && shared_name(n) == mine)
            .count();
        if mine.is_some() && aliases != 1 {
            return Origin::Other;
        }
        let mut assigned = false;
        for node in self.nodes.values() {
            let inputs: Vec<&str> = data_inputs(node).collect();
            if !inputs.iter().any(|i| tensor_node(i) == name) {
                continue;
            }
            match node.op.as_str() {
                "ReadVariableOp" | "VarIsInitializedOp" => {}
                "AssignVariableOp" if tensor_node(inputs[0]) == name && inputs.len() == 2 => {
                    if self.origin(Domain::Path, None, inputs[1], depth + 1, memo) != Origin::Own {
                        return Origin::Other;
                    }
                    assigned = true;
                }
                _ => return Origin::Other,
            }
        }
        if assigned {
            Origin::Own
        } else {
            Origin::Other
        }
    }

    /// A function argument's origin: the same at every call site, or `Other`.
    fn argument_origin(
        &self,
        domain: Domain,
        function: &'a str,
        arg: &str,
        depth: usize,
        memo: &mut HashMap<(Domain, Option<String>, String), Origin>,
    ) -> Origin {
        let Some(def) = self.functions.get(function) else {
            return Origin::Other;
        };
        let Some(index) = def
            .signature
            .as_ref()
            .and_then(|s| s.input_arg.iter().position(|a| a.name == arg))
        else {
            return Origin::Other;
        };
        if self.other_uses.contains(function) {
            return Origin::Other;
        }
        let Some(sites) = self.call_sites.get(function) else {
            return Origin::Other;
        };
        let mut result: Option<Origin> = None;
        for (scope, node) in sites {
            let origin = match data_inputs(node).nth(index) {
                Some(input) => self.origin(domain, *scope, input, depth + 1, memo),
                None => Origin::Other,
            };
            result = Some(result.map_or(origin, |r| meet(r, origin)));
        }
        result.unwrap_or(Origin::Other)
    }

    /// For every node, the entry points that reach it: signatures by key, `<load>` for what
    /// the loader runs (the restore op, the init op, main_op and table initialisers).
    fn reach(&self) -> HashMap<(Option<String>, String), BTreeSet<String>> {
        let mut entries: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (key, sig) in &self.meta.signature_def {
            let label = if key == "__saved_model_init_op" {
                "<load>".to_string()
            } else {
                key.clone()
            };
            let outputs = entries.entry(label).or_default();
            for info in sig.outputs.values() {
                if let Some(crate::tf::tensor_info::Encoding::Name(name)) = &info.encoding {
                    outputs.push(tensor_node(name));
                }
            }
        }
        let load = entries.entry("<load>".to_string()).or_default();
        if let Some(saver) = &self.meta.saver_def {
            load.push(tensor_node(&saver.restore_op_name));
        }
        for key in [
            "saved_model_main_op",
            "legacy_init_op",
            "table_initializer",
            "init_op",
        ] {
            if let Some(crate::tf::collection_def::Kind::NodeList(list)) = self
                .meta
                .collection_def
                .get(key)
                .and_then(|c| c.kind.as_ref())
            {
                load.extend(list.value.iter().map(|n| tensor_node(n)));
            }
        }
        let mut reach: HashMap<(Option<String>, String), BTreeSet<String>> = HashMap::new();
        for (label, starts) in &entries {
            // Within the top-level graph: every ancestor of the entry's nodes.
            let mut seen: HashSet<&str> = HashSet::new();
            let mut stack: Vec<&str> = starts.clone();
            let mut called: Vec<&str> = Vec::new();
            while let Some(name) = stack.pop() {
                if !seen.insert(name) {
                    continue;
                }
                let Some(node) = self.nodes.get(name) else {
                    continue;
                };
                reach
                    .entry((None, name.to_string()))
                    .or_default()
                    .insert(label.clone());
                called.extend(self.called_by(node));
                stack.extend(node.input.iter().map(|i| tensor_node(i)));
            }
            // Every node of every function reached, through calls of any depth.
            let mut done: HashSet<&str> = HashSet::new();
            while let Some(f) = called.pop() {
                if !done.insert(f) {
                    continue;
                }
                let Some(def) = self.functions.get(f) else {
                    continue;
                };
                for node in &def.node_def {
                    reach
                        .entry((Some(f.to_string()), node.name.clone()))
                        .or_default()
                        .insert(label.clone());
                    called.extend(self.called_by(node));
                }
            }
        }
        reach
    }

    /// The library functions a node runs: its op type, and every function-valued attribute.
    fn called_by(&self, node: &'a NodeDef) -> Vec<&'a str> {
        let mut called: Vec<&'a str> = node.attr.values().flat_map(attr_functions).collect();
        if self.functions.contains_key(node.op.as_str()) {
            called.push(node.op.as_str());
        }
        called
    }
}

/// A scalar string constant's value.
fn const_string(node: &NodeDef) -> Option<String> {
    match node.attr.get("value")?.value.as_ref()? {
        attr_value::Value::Tensor(t) if t.string_val.len() == 1 => {
            Some(String::from_utf8_lossy(&t.string_val[0]).into_owned())
        }
        _ => None,
    }
}
