//! Batching, as TensorFlow Serving's `--enable_batching` does it: Predict requests to one version
//! that can be merged (the same signature, output filter, input names, dtypes and shapes past the
//! first dimension) are concatenated along that dimension and cross into the sandbox as one run,
//! whose outputs are split back by each request's rows.
//!
//! A batch is closed by rows (`max_batch_size`), by bytes (never more than one request may hold,
//! so a merged request passes no limit a single one would not), or by time (`batch_timeout`).
//! At most `num_batch_threads` batches run at once and `max_enqueued_batches` wait; past that a
//! request is refused as TensorFlow Serving refuses it. A bad request fails alone: when a batch's
//! run fails, or its outputs cannot be split by rows, each of its requests is run on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tfsandbox::wire::Tensor as WireTensor;
use tfsandbox::{Pool, Tensor};

use crate::service::library_call;
use crate::versions::Version;
use tonic::Status;

/// TensorFlow Serving's `BatchingParameters`, the fields taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingParameters {
    /// Rows (the first dimension, summed over the requests) of one batch.
    pub max_batch_size: usize,
    /// How long a batch that is not full waits for more requests.
    pub batch_timeout: Duration,
    /// Batches waiting for a thread, past which requests are refused.
    pub max_enqueued_batches: usize,
    /// Batches run at once.
    pub num_batch_threads: usize,
}

impl Default for BatchingParameters {
    /// TensorFlow Serving's defaults.
    fn default() -> Self {
        BatchingParameters {
            max_batch_size: 1000,
            batch_timeout: Duration::ZERO,
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// What a request merges with: its signature, output filter, and each input's name, dtype and
/// shape past the first dimension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    signature: String,
    outputs: Vec<String>,
    inputs: Vec<(String, i32, Vec<usize>)>,
}

type Answer = Result<BTreeMap<String, Tensor>, tfsandbox::Error>;

struct Entry {
    inputs: Vec<(String, Tensor)>,
    rows: usize,
    deadline: Option<Duration>,
    request_id: Option<String>,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// A batch being filled: its first request's task runs it once it may (its timeout passed, or
/// it is full) and a batch thread is free; requests keep joining until then.
struct Batch {
    entries: Mutex<Vec<Entry>>,
    full: tokio::sync::Notify,
}

struct Open {
    batch: Arc<Batch>,
    rows: usize,
    bytes: usize,
}

struct State {
    open: HashMap<Key, Open>,
    /// Batches made and not yet running.
    waiting: usize,
}

/// One version's batcher.
pub struct Batcher {
    parameters: BatchingParameters,
    /// The most bytes a batch's inputs may hold: what one request may.
    max_bytes: usize,
    state: Mutex<State>,
    threads: Arc<tokio::sync::Semaphore>,
}

impl Batcher {
    pub fn new(parameters: BatchingParameters, max_bytes: usize) -> Arc<Batcher> {
        Arc::new(Batcher {
            parameters,
            max_bytes,
            state: Mutex::new(State {
                open: HashMap::new(),
                waiting: 0,
            }),
            threads: Arc::new(tokio::sync::Semaphore::new(
                parameters.num_batch_threads.max(1),
            )),
        })
    }

    /// Runs the request on `version`'s pool, in a batch where it can be merged, else alone.
    #[allow(clippy::too_many_arguments)]
    pub async fn predict(
        self: &Arc<Self>,
        version: &Arc<Version>,
        signature: String,
        outputs: Vec<String>,
        inputs: Vec<(String, Tensor)>,
        deadline: Option<Duration>,
        request_id: Option<String>,
    ) -> Result<BTreeMap<String, Tensor>, Status> {
        let Some((key, rows)) = key_of(&signature, &outputs, &inputs) else {
            let predict = library_call(signature, outputs, inputs, deadline, request_id);
            return version
                .pool
                .predict_with(predict)
                .await
                .map_err(|e| crate::service::status_of(&e));
        };
        if rows > self.parameters.max_batch_size {
            // TensorFlow Serving's words.
            return Err(Status::invalid_argument(format!(
                "Task size {rows} is larger than maximum input batch size {}",
                self.parameters.max_batch_size
            )));
        }
        let bytes: usize = inputs.iter().map(|(_, t)| t.byte_len()).sum();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let entry = Entry {
            inputs,
            rows,
            deadline,
            request_id,
            reply,
        };
        let led = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let fits = state.open.get(&key).is_some_and(|open| {
                open.rows + rows <= self.parameters.max_batch_size
                    && open.bytes + bytes <= self.max_bytes
            });
            if !fits {
                // The open batch (if any) is full for this request: it runs as it is.
                if let Some(open) = state.open.remove(&key) {
                    open.batch.full.notify_one();
                }
                if state.waiting >= self.parameters.max_enqueued_batches.max(1) {
                    return Err(Status::unavailable(
                        "The batch scheduling queue to which this task was submitted is full",
                    ));
                }
                state.waiting += 1;
                state.open.insert(
                    key.clone(),
                    Open {
                        batch: Arc::new(Batch {
                            entries: Mutex::new(Vec::new()),
                            full: tokio::sync::Notify::new(),
                        }),
                        rows: 0,
                        bytes: 0,
                    },
                );
            }
            let open = state.open.get_mut(&key).expect("made above");
            open.rows += rows;
            open.bytes += bytes;
            let batch = open.batch.clone();
            let full = open.rows >= self.parameters.max_batch_size;
            // Under the state lock, as the taking is: no request joins a batch already taken.
            batch
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry);
            if full {
                state.open.remove(&key);
                batch.full.notify_one();
            }
            (!fits).then_some(batch)
        };
        if let Some(batch) = led {
            // Its own task: the batch runs even if this caller goes away.
            let batcher = self.clone();
            let version = version.clone();
            tokio::spawn(async move { batcher.lead(version, key, batch).await });
        }
        match answer.await {
            Ok(answer) => answer.map_err(|e| crate::service::status_of(&e)),
            Err(_) => Err(Status::internal(
                "the batch this request was in was dropped",
            )),
        }
    }

    /// Waits until `batch` may run (full, or its timeout passed) and a batch thread is free,
    /// takes it from the open ones, and runs it.
    async fn lead(self: Arc<Self>, version: Arc<Version>, key: Key, batch: Arc<Batch>) {
        let _ = tokio::time::timeout(self.parameters.batch_timeout, batch.full.notified()).await;
        let permit = self.threads.clone().acquire_owned().await;
        let entries = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .open
                .get(&key)
                .is_some_and(|open| Arc::ptr_eq(&open.batch, &batch))
            {
                state.open.remove(&key);
            }
            state.waiting = state.waiting.saturating_sub(1);
            let mut entries = batch.entries.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *entries)
        };
        run(&version.pool, &key, entries).await;
        drop(permit);
    }
}

/// The key and rows of a request that can be batched: every input has a first dimension, the
/// same for all.
fn key_of(
    signature: &str,
    outputs: &[String],
    inputs: &[(String, Tensor)],
) -> Option<(Key, usize)> {
    let mut rows = None;
    let mut shapes = Vec::with_capacity(inputs.len());
    for (name, tensor) in inputs {
        let shape = tensor.shape();
        let (&first, rest) = shape.split_first()?;
        if *rows.get_or_insert(first) != first {
            return None;
        }
        shapes.push((name.clone(), tensor.dtype().to_wire() as i32, rest.to_vec()));
    }
    shapes.sort();
    let mut outputs = outputs.to_vec();
    outputs.sort();
    Some((
        Key {
            signature: signature.to_string(),
            outputs,
            inputs: shapes,
        },
        rows?,
    ))
}

/// Runs one request of a batch on its own and answers it.
async fn run_alone(pool: &Pool, key: &Key, entry: Entry) {
    let predict = library_call(
        key.signature.clone(),
        key.outputs.clone(),
        entry.inputs,
        entry.deadline,
        entry.request_id,
    );
    let _ = entry.reply.send(pool.predict_with(predict).await);
}

/// Runs one batch and answers each of its requests.
async fn run(pool: &Pool, key: &Key, entries: Vec<Entry>) {
    if entries.len() == 1 {
        let entry = entries.into_iter().next().expect("one");
        return run_alone(pool, key, entry).await;
    }
    let rows: Vec<usize> = entries.iter().map(|e| e.rows).collect();
    let merged: Vec<(String, Tensor)> = key
        .inputs
        .iter()
        .map(|(name, _, _)| {
            let parts: Vec<&Tensor> = entries
                .iter()
                .map(|e| {
                    &e.inputs
                        .iter()
                        .find(|(n, _)| n == name)
                        .expect("same key")
                        .1
                })
                .collect();
            (name.clone(), concat(&parts))
        })
        .collect();
    // The batch waits as long as its most patient request.
    let deadline = entries
        .iter()
        .map(|e| e.deadline)
        .try_fold(Duration::ZERO, |most, d| d.map(|d| most.max(d)));
    let answer = pool
        .predict_with(library_call(
            key.signature.clone(),
            key.outputs.clone(),
            merged,
            deadline,
            entries.iter().find_map(|e| e.request_id.clone()),
        ))
        .await;
    let split = answer.ok().and_then(|outputs| split(outputs, &rows));
    match split {
        Some(parts) => {
            for (entry, part) in entries.into_iter().zip(parts) {
                let _ = entry.reply.send(Ok(part));
            }
        }
        None => {
            // A request the model refused, or outputs not by rows: each runs alone, so one bad
            // request fails only itself.
            let runs = entries.into_iter().map(|entry| run_alone(pool, key, entry));
            futures::future::join_all(runs).await;
        }
    }
}

/// `parts` (same dtype and shape past the first dimension) one after another along it.
fn concat(parts: &[&Tensor]) -> Tensor {
    let first = parts[0].clone().into_wire();
    let mut wire = WireTensor {
        dtype: first.dtype,
        shape: first.shape.clone(),
        content: bytes::Bytes::new(),
        string_values: Vec::new(),
    };
    let mut content = Vec::new();
    let mut rows = 0i64;
    for part in parts {
        let part = (*part).clone().into_wire();
        rows += part.shape[0];
        content.extend_from_slice(&part.content);
        wire.string_values.extend(part.string_values);
    }
    wire.shape[0] = rows;
    wire.content = content.into();
    Tensor::from_wire(wire).expect("parts of one key concatenate into a consistent tensor")
}

/// Each output cut back into the requests' rows; `None` where an output's first dimension is not
/// the batch's rows (it cannot be split by request).
fn split(
    outputs: BTreeMap<String, Tensor>,
    rows: &[usize],
) -> Option<Vec<BTreeMap<String, Tensor>>> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<BTreeMap<String, Tensor>> = vec![BTreeMap::new(); rows.len()];
    for (name, tensor) in outputs {
        let wire = tensor.into_wire();
        if wire.shape.first().copied() != Some(total as i64) {
            return None;
        }
        let per_row: usize = wire.shape[1..].iter().map(|&d| d as usize).product();
        let strings = tfsandbox::DType::from_wire(wire.dtype) == Some(tfsandbox::DType::String);
        let row_bytes = wire.content.len().checked_div(total).unwrap_or(0);
        let mut at = 0usize;
        for (part, &n) in parts.iter_mut().zip(rows) {
            let mut shape = wire.shape.clone();
            shape[0] = n as i64;
            let piece = WireTensor {
                dtype: wire.dtype,
                shape,
                content: if strings {
                    bytes::Bytes::new()
                } else {
                    wire.content.slice(at * row_bytes..(at + n) * row_bytes)
                },
                string_values: if strings {
                    wire.string_values[at * per_row..(at + n) * per_row].to_vec()
                } else {
                    Vec::new()
                },
            };
            part.insert(name.clone(), Tensor::from_wire(piece).ok()?);
            at += n;
        }
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_concatenate_and_split_by_rows() {
        let a = Tensor::new(&[1, 2], &[1.0f32, 2.0]).unwrap();
        let b = Tensor::new(&[2, 2], &[3.0f32, 4.0, 5.0, 6.0]).unwrap();
        let merged = concat(&[&a, &b]);
        assert_eq!(merged.shape(), [3, 2]);
        let parts = split([("y".to_string(), merged)].into(), &[1, 2]).unwrap();
        assert_eq!(parts[0]["y"], a);
        assert_eq!(parts[1]["y"], b);
        let s = Tensor::strings(&[2], vec!["x", "y"]).unwrap();
        let t = Tensor::strings(&[1], vec!["z"]).unwrap();
        let parts = split([("s".to_string(), concat(&[&s, &t]))].into(), &[2, 1]).unwrap();
        assert_eq!((&parts[0]["s"], &parts[1]["s"]), (&s, &t));
        // An output that is not by rows cannot be split.
        let scalar = Tensor::scalar(1.0f32);
        assert!(split([("y".to_string(), scalar)].into(), &[1, 2]).is_none());
    }

    #[test]
    fn only_requests_with_one_first_dimension_are_batched() {
        let x = |shape: &[usize]| {
            let n = shape.iter().product();
            Tensor::new(shape, &vec![0f32; n]).unwrap()
        };
        let (key, rows) = key_of("s", &[], &[("x".into(), x(&[3, 1]))]).unwrap();
        assert_eq!((rows, key.inputs[0].2.clone()), (3, vec![1]));
        assert!(key_of("s", &[], &[("x".into(), x(&[]))]).is_none());
        assert!(key_of("s", &[], &[("a".into(), x(&[2])), ("b".into(), x(&[3]))]).is_none());
    }
}
