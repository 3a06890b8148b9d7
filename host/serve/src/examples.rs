//! Classify and regress: the tf.Example inputs a classify or regress signature takes, and the
//! results TensorFlow Serving builds from its outputs.

use std::collections::{BTreeMap, HashMap};

use crate::proto::serving as pb;
use crate::proto::{Example, Feature, Features};
use prost::Message;
use tfsandbox::tensor::{DType, Tensor, STRING_OVERHEAD_BYTES};
use tonic::Status;

/// Every Example of an Input, with the context's features merged in (an example's own
/// features win), serialized as a classify or regress signature takes them.
pub fn serialized_examples(
    input: Option<pb::Input>,
    limit: usize,
) -> Result<Vec<bytes::Bytes>, Status> {
    let kind = input
        .and_then(|i| i.kind)
        .ok_or_else(|| Status::invalid_argument("Input is empty"))?;
    let (examples, context) = match kind {
        pb::input::Kind::ExampleList(list) => (list.examples, None),
        pb::input::Kind::ExampleListWithContext(list) => (list.examples, list.context),
    };
    if examples.is_empty() {
        return Err(Status::invalid_argument("Input is empty"));
    }
    // The context is copied into every example: a large one and many empty examples would
    // multiply, so the merged size is bounded before anything is merged.
    let context_bytes = context.as_ref().map_or(0, |c| c.encoded_len()) as u128;
    let bytes: u128 = examples
        .iter()
        .map(|e| e.encoded_len() as u128 + context_bytes + STRING_OVERHEAD_BYTES as u128)
        .sum();
    if bytes > limit as u128 {
        return Err(Status::resource_exhausted(format!(
            "{} examples with a context of {context_bytes} bytes would take up to {bytes} bytes in memory once merged, over the limit of {limit} per request (--max_request_bytes)",
            examples.len()
        )));
    }
    let context: HashMap<String, Feature> = context
        .and_then(|c| c.features)
        .map(|f| f.feature)
        .unwrap_or_default();
    Ok(examples
        .into_iter()
        .map(|example| {
            let mut feature = context.clone();
            feature.extend(example.features.unwrap_or_default().feature);
            Example {
                features: Some(Features { feature }),
            }
            .encode_to_vec()
            .into()
        })
        .collect())
}

/// Classes and scores of a classify signature: `classes` (strings) and/or `scores` (floats),
/// each [batch] or [batch, classes].
pub fn classification(
    outputs: &BTreeMap<String, Tensor>,
    batch: usize,
    limit: usize,
) -> Result<pb::ClassificationResult, Status> {
    let bad = |m: String| Status::invalid_argument(m);
    let classes = outputs.get("classes");
    let scores = outputs.get("scores");
    if classes.is_none() && scores.is_none() {
        return Err(bad(
            "Expected classification signature outputs \"classes\" and/or \"scores\"".into(),
        ));
    }
    let per_row = |t: &Tensor| -> Result<usize, Status> {
        let shape = t.shape();
        match shape.as_slice() {
            [b] if *b == batch => Ok(1),
            [b, k] if *b == batch => Ok(*k),
            _ => Err(bad(format!(
                "classification output of shape {shape:?} does not match a batch of {batch}"
            ))),
        }
    };
    let labels: Option<(Vec<bytes::Bytes>, usize)> = match classes {
        Some(t) if t.dtype() == DType::String => Some((
            t.string_values().map_err(|e| bad(e.to_string()))?.to_vec(),
            per_row(t)?,
        )),
        Some(t) => {
            return Err(bad(format!(
                "output \"classes\" is {}, expected string",
                t.dtype()
            )))
        }
        None => None,
    };
    let values: Option<(Vec<f32>, usize)> = match scores {
        Some(t) => Some((
            t.to_vec::<f32>()
                .map_err(|e| bad(format!("output \"scores\": {e}")))?,
            per_row(t)?,
        )),
        None => None,
    };
    let k = match (&labels, &values) {
        (Some((_, a)), Some((_, b))) if a != b => {
            return Err(bad(format!(
                "\"classes\" has {a} per example, \"scores\" {b}"
            )))
        }
        (Some((_, k)), _) | (_, Some((_, k))) => *k,
        (None, None) => 0,
    };
    // Each class becomes a message of its own, far larger than a 4-byte score.
    let label_bytes: u128 = labels
        .as_ref()
        .map_or(0, |(l, _)| l.iter().map(|s| s.len() as u128).sum());
    let bytes =
        (batch as u128) * (k as u128) * std::mem::size_of::<pb::Class>() as u128 + label_bytes;
    if bytes > limit as u128 {
        return Err(Status::resource_exhausted(format!(
            "the classification of {batch} examples with {k} classes each would take {bytes} bytes in memory, over the limit of {limit} per request (--max_request_bytes)"
        )));
    }
    let classifications = (0..batch)
        .map(|row| pb::Classifications {
            classes: (0..k)
                .map(|i| pb::Class {
                    label: labels
                        .as_ref()
                        .map(|(l, _)| String::from_utf8_lossy(&l[row * k + i]).into_owned())
                        .unwrap_or_default(),
                    score: values
                        .as_ref()
                        .map(|(s, _)| s[row * k + i])
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Ok(pb::ClassificationResult { classifications })
}

/// Values of a regress signature: `outputs`, floats of shape [batch] or [batch, 1].
pub fn regression(
    outputs: &BTreeMap<String, Tensor>,
    batch: usize,
) -> Result<pb::RegressionResult, Status> {
    let bad = |m: String| Status::invalid_argument(m);
    let t = outputs
        .get("outputs")
        .ok_or_else(|| bad("Expected regression signature output \"outputs\"".into()))?;
    let shape = t.shape();
    if !matches!(shape.as_slice(), [b] | [b, 1] if *b == batch) {
        return Err(bad(format!(
            "regression output of shape {shape:?} does not match a batch of {batch}"
        )));
    }
    let values = t
        .to_vec::<f32>()
        .map_err(|e| bad(format!("output \"outputs\": {e}")))?;
    Ok(pb::RegressionResult {
        regressions: values
            .into_iter()
            .map(|value| pb::Regression { value })
            .collect(),
    })
}

/// The examples an Input holds: the batch its results must match.
pub fn count_examples(input: Option<&pb::Input>) -> usize {
    match input.and_then(|i| i.kind.as_ref()) {
        Some(pb::input::Kind::ExampleList(l)) => l.examples.len(),
        Some(pb::input::Kind::ExampleListWithContext(l)) => l.examples.len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_pairs_classes_and_scores() {
        let outputs: BTreeMap<String, Tensor> = [
            (
                "classes".to_string(),
                Tensor::strings(&[2, 2], vec!["a", "b", "a", "b"]).unwrap(),
            ),
            (
                "scores".to_string(),
                Tensor::new(&[2, 2], &[0.9f32, 0.1, 0.2, 0.8]).unwrap(),
            ),
        ]
        .into();
        let result = classification(&outputs, 2, 1 << 20).unwrap();
        assert_eq!(result.classifications.len(), 2);
        assert_eq!(result.classifications[1].classes[1].label, "b");
        assert_eq!(result.classifications[1].classes[1].score, 0.8);
        assert!(classification(&outputs, 3, 1 << 20).is_err());
        let error = classification(&outputs, 2, 100).unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    }

    #[test]
    fn regression_reads_outputs() {
        let outputs: BTreeMap<String, Tensor> = [(
            "outputs".to_string(),
            Tensor::new(&[2, 1], &[1.5f32, 2.5]).unwrap(),
        )]
        .into();
        let result = regression(&outputs, 2).unwrap();
        assert_eq!(
            result
                .regressions
                .iter()
                .map(|r| r.value)
                .collect::<Vec<_>>(),
            vec![1.5, 2.5]
        );
    }

    #[test]
    fn context_features_merge_into_examples() {
        let feature = |v: i64| Feature {
            kind: Some(crate::proto::feature::Kind::Int64List(
                crate::proto::Int64List { value: vec![v] },
            )),
        };
        let example = |pairs: &[(&str, i64)]| Example {
            features: Some(Features {
                feature: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), feature(*v)))
                    .collect(),
            }),
        };
        let input = pb::Input {
            kind: Some(pb::input::Kind::ExampleListWithContext(
                pb::ExampleListWithContext {
                    examples: vec![example(&[("a", 1)]), example(&[("a", 2), ("c", 5)])],
                    context: Some(example(&[("c", 9)])),
                },
            )),
        };
        let serialized = serialized_examples(Some(input.clone()), 1 << 20).unwrap();
        let second = Example::decode(serialized[1].clone()).unwrap();
        let first = Example::decode(serialized[0].clone()).unwrap();
        assert_eq!(first.features.unwrap().feature["c"], feature(9));
        assert_eq!(second.features.unwrap().feature["c"], feature(5));
        assert!(serialized_examples(None, 1 << 20).is_err());
        // Ten examples and the context copied into each: past a limit of 300 bytes.
        let pb::input::Kind::ExampleListWithContext(mut list) = input.kind.unwrap() else {
            unreachable!()
        };
        list.examples = vec![Example::default(); 10];
        let many = pb::Input {
            kind: Some(pb::input::Kind::ExampleListWithContext(list)),
        };
        let error = serialized_examples(Some(many), 300).unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
        assert!(
            error.message().contains("10 examples"),
            "{}",
            error.message()
        );
    }
}
