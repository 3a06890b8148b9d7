//! The scanner on any saved_model.pb bytes: decoded, every MetaGraph scanned, the report rendered
//! and checked against a policy. Nothing may panic, overflow the stack or allocate what the bytes
//! merely claim; a SavedModel that decodes must scan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfsandbox_scan::{decode_saved_model, scan, OpPolicy, ScanError, ScanLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = decode_saved_model(data) else {
        return;
    };
    let limits = ScanLimits::default();
    let tag_sets: Vec<Vec<String>> = model
        .meta_graphs
        .iter()
        .map(|m| m.meta_info_def.as_ref().map(|i| i.tags.clone()).unwrap_or_default())
        .collect();
    for tags in tag_sets.iter().filter(|t| !t.is_empty()) {
        match scan(&model, tags, &limits) {
            Ok(report) => {
                let _ = report.render();
                let _ = OpPolicy::serve_default().check(&report);
            }
            Err(ScanError::TooManySignatures { .. }) => {}
            Err(e) => panic!("a decoded SavedModel failed to scan with its own tags {tags:?}: {e}"),
        }
    }
});
