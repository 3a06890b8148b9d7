//! Security events, as a stream an embedder subscribes to ([`Events::subscribe`]).
//!
//! Every sandbox started from a [`crate::Config`] sends to its `events` (clones of a config share
//! one stream). The stream is a bounded broadcast channel: sending never waits, and a subscriber
//! that falls more than [`Events::capacity`] behind loses the oldest events; its next `recv`
//! says how many (`RecvError::Lagged(n)`), so the loss is counted, never silent.

use std::fmt;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::exit::WorkerExit;

/// How many events a subscriber may fall behind before it loses the oldest.
pub const DEFAULT_CAPACITY: usize = 1024;

/// One security event. Serialised (serde) as an object whose `event` field names the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A sandbox's first worker answered.
    SandboxStarted { sandbox: String, runtime: String },
    /// A worker died and a new one took its place, with every model loaded again.
    WorkerRestarted {
        sandbox: String,
        /// The new worker's generation.
        generation: u64,
        /// The death that began this restart (a worker that then died while its models were
        /// loaded again is counted, but not reported here).
        exit: WorkerExit,
    },
    /// A worker kept dying: no more restarts (`RestartPolicy::max_restarts`).
    GaveUp { sandbox: String, reason: String },
    /// A run outlived its deadline by `Config::stuck_grace` inside TensorFlow: the worker was
    /// killed (and is replaced).
    KilledPastDeadline {
        sandbox: String,
        call: String,
        grace_ms: u64,
    },
    /// A call or load was refused by a limit (`limit` names it: `max_concurrent_calls`,
    /// `max_models`, `max_tensor_bytes`, `max_message_bytes`).
    LimitHit {
        sandbox: String,
        limit: &'static str,
        call: String,
        /// What was asked for, and the bound.
        value: u64,
        bound: u64,
    },
    /// Worker log lines dropped over the rate limit.
    LogDropped { worker: String, bytes: u64 },
    /// The worker stopped reading: the host's write queue passed its bound, and the worker is
    /// killed.
    WorkerNotReading { worker: String, reason: String },
    /// A model was loaded; `digest` is [`crate::digest::folder`]'s over its host folder.
    ModelLoaded {
        sandbox: String,
        model: String,
        /// The host folder, as `Path::display` writes it.
        path: String,
        digest: String,
        files: u64,
        bytes: u64,
        /// What its ops can do (tfsandbox-scan's names), as the worker's scan found them; `None`
        /// where the scan could not read the model.
        capabilities: Option<Vec<&'static str>>,
    },
}

impl Event {
    /// The event's kind, as serialised in `event`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SandboxStarted { .. } => "sandbox_started",
            Event::WorkerRestarted { .. } => "worker_restarted",
            Event::GaveUp { .. } => "gave_up",
            Event::KilledPastDeadline { .. } => "killed_past_deadline",
            Event::LimitHit { .. } => "limit_hit",
            Event::LogDropped { .. } => "log_dropped",
            Event::WorkerNotReading { .. } => "worker_not_reading",
            Event::ModelLoaded { .. } => "model_loaded",
        }
    }
}

/// Where a sandbox's events go: a bounded broadcast channel. Cloning shares it.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    capacity: usize,
}

impl Events {
    /// A stream on which a subscriber may fall `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            tx: broadcast::Sender::new(capacity),
            capacity,
        }
    }

    /// Every event sent from now on; a receiver that falls behind gets `Lagged(lost)`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sends without waiting; with no subscriber the event is dropped.
    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(event = event.kind(), "security event");
        let _ = self.tx.send(event);
    }
}

impl Default for Events {
    fn default() -> Events {
        Events::new(DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}
