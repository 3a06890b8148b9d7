//! The flags of tensorflow_model_server (its `main.cc`) that `tfsandbox serve` takes besides the
//! ones it shares with its own (`--port`, `--grpc_socket_path`, `--model_name`,
//! `--model_base_path`, `--model_config_file`, `--file_system_poll_wait_seconds`).
//!
//! Each flag is honoured as TensorFlow Serving honours it, or refused with its reason when set to
//! anything but what tfsandbox does, so a command line written for TensorFlow Serving never runs
//! half-followed. Only flags that cannot change an answer, a limit or resource use here are
//! accepted with a warning ([`NO_EFFECT`]).

use std::time::Duration;

use anyhow::{bail, Result};

/// Why a flag is refused; the refusal names the flag first.
const NOT_YET: &str = "not supported yet by tfsandbox serve";
const TFLITE: &str =
    "not supported: the sandbox's worker runs TensorFlow SavedModels, not TensorFlow Lite";
const ALTS: &str = "not supported: ALTS needs Google Cloud's handshaker service, which the server does not reach (use --tls-cert and --tls-key)";
const PROFILER: &str =
    "not supported: TensorFlow's profiler runs inside the sandbox, where no profiler client reaches it (its calls are answered UNIMPLEMENTED)";

const THREAD_POOL_FACTORY: &str = "not supported: it names a thread pool factory compiled into a TensorFlow Serving build (open-source builds register none); here every call runs on its session's own pools (--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism)";

/// Flags accepted with a warning, each with why it cannot matter here (listed in the README).
const NO_EFFECT: &[(&str, &str)] = &[
    (
        "flush_filesystem_caches",
        "the model files are read inside the sandbox, and the server holds none of them",
    ),
    (
        "remove_unused_fields_from_bundle_metagraph",
        "the server never holds a MetaGraphDef; the worker's TensorFlow keeps what it loads",
    ),
    ("skip_initialize_tpu", "no TPU is ever initialized"),
    (
        "grpc_max_threads",
        "the gRPC server runs calls as tasks on a fixed set of workers and starts no thread per call; --max_calls_per_sandbox and --max_connections bound the work",
    ),
];

/// `true`, `false`, `1`, `0`, as TensorFlow's flag parser takes them (`--flag` alone is `true`).
fn tf_bool(text: &str) -> std::result::Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("'{text}' is not true, false, 1 or 0")),
    }
}

/// tensorflow_model_server's flags, with its defaults. Those that are only ever refused (set to
/// anything but what is done here) are hidden from `--help` to keep it readable; the README lists
/// them.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "TensorFlow Serving flags")]
pub struct TfServingFlags {
    /// Port of the HTTP/REST API; 0: none.
    #[arg(long = "rest_api_port", value_name = "PORT", default_value_t = 0)]
    pub rest_api_port: u16,
    /// REST calls handled at once, as TensorFlow Serving's REST threads (default: 4 per CPU).
    #[arg(long = "rest_api_num_threads", value_name = "N")]
    pub rest_api_num_threads: Option<u32>,
    /// Timeout of a REST call, in milliseconds (ignored without --rest_api_port).
    #[arg(
        long = "rest_api_timeout_in_ms",
        value_name = "MS",
        default_value_t = 30000
    )]
    pub rest_api_timeout_in_ms: i64,
    /// Answer REST calls with CORS headers (Access-Control-Allow-Origin: *).
    #[arg(long = "rest_api_enable_cors_support", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub rest_api_enable_cors_support: bool,
    /// Comma-separated gRPC server arguments: grpc.max_receive_message_length,
    /// grpc.max_send_message_length, grpc.so_reuseaddr, grpc.max_concurrent_streams,
    /// grpc.max_connection_idle_ms, grpc.max_connection_age_ms, grpc.max_connection_age_grace_ms,
    /// grpc.keepalive_time_ms, grpc.keepalive_timeout_ms (client-only ones such as
    /// grpc.lb_policy_name: a warning).
    #[arg(
        long = "grpc_channel_arguments",
        value_name = "K=V,...",
        default_value = ""
    )]
    pub grpc_channel_arguments: String,
    /// Comma-separated MetaGraph tags to load (default: serve).
    #[arg(long = "saved_model_tags", value_name = "TAG,...", default_value = "")]
    pub saved_model_tags: String,
    /// Serve the standard gRPC health service (grpc.health.v1).
    #[arg(long = "enable_grpc_healthcheck_service", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub enable_grpc_healthcheck_service: bool,
    /// Answer Predict in tensor_content instead of the typed fields.
    #[arg(long = "enable_serialization_as_tensor_content", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub enable_serialization_as_tensor_content: bool,
    /// Refuse Classify and Regress on signatures whose method_name is not classify or regress
    /// (off: TF2 models' classify and regress signatures, named predict, are served).
    #[arg(long = "enable_signature_method_name_check", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub enable_signature_method_name_check: bool,
    /// Print the version and exit.
    #[arg(long = "version", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub version: bool,
    /// Retries of a version whose sandbox failed to start or whose worker died while loading
    /// (a model TensorFlow refuses is not retried).
    #[arg(long = "max_num_load_retries", value_name = "N", default_value_t = 5)]
    pub max_num_load_retries: i32,
    /// Wait between load retries, in microseconds (negative: none).
    #[arg(
        long = "load_retry_interval_micros",
        value_name = "US",
        default_value_t = 60_000_000
    )]
    pub load_retry_interval_micros: i64,
    /// Read --model_config_file again this often, in seconds, and serve what it lists when it
    /// changed (0: only at start).
    #[arg(
        long = "model_config_file_poll_wait_seconds",
        value_name = "S",
        default_value_t = 0
    )]
    pub model_config_file_poll_wait_seconds: i32,
    /// Merge the runs of requests to one version (Predict, Classify, Regress) into batches
    /// before they cross into its sandbox.
    #[arg(long = "enable_batching", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub enable_batching: bool,
    /// TensorFlow Serving's text-format BatchingParameters (max_batch_size, batch_timeout_micros,
    /// max_enqueued_batches, num_batch_threads).
    #[arg(
        long = "batching_parameters_file",
        value_name = "F",
        default_value = ""
    )]
    pub batching_parameters_file: String,
    /// With --enable_batching: each version's own batching_params.pbtxt in place of
    /// --batching_parameters_file (a version without one is not batched).
    #[arg(long = "enable_per_model_batching_parameters", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub enable_per_model_batching_parameters: bool,
    /// Let a label not yet assigned name a version not yet served.
    #[arg(long = "allow_version_labels_for_unavailable_models", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub allow_version_labels_for_unavailable_models: bool,
    /// Versions loaded at once (0: no bound; TensorFlow Serving's 0 loads one at a time).
    #[arg(long = "num_load_threads", value_name = "N", default_value_t = 0)]
    pub num_load_threads: i32,
    /// Versions shut down at once (0: no bound).
    #[arg(long = "num_unload_threads", value_name = "N", default_value_t = 0)]
    pub num_unload_threads: i32,
    #[arg(long = "flush_filesystem_caches", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = tf_bool)]
    pub flush_filesystem_caches: Option<bool>,
    /// Threads of each model's TensorFlow session, intra-op and inter-op alike (0: one per core).
    #[arg(
        long = "tensorflow_session_parallelism",
        value_name = "N",
        default_value_t = 0
    )]
    pub tensorflow_session_parallelism: i64,
    /// A text-format tensorflow.ConfigProto every session is made with; the thread and GPU
    /// memory flags override its fields where they are set.
    #[arg(
        long = "tensorflow_session_config_file",
        value_name = "F",
        default_value = ""
    )]
    pub tensorflow_session_config_file: String,
    /// Threads of each session's intra-op pool (overrides --tensorflow_session_parallelism).
    #[arg(
        long = "tensorflow_intra_op_parallelism",
        value_name = "N",
        default_value_t = 0
    )]
    pub tensorflow_intra_op_parallelism: i64,
    /// Threads of each session's inter-op pool (overrides --tensorflow_session_parallelism).
    #[arg(
        long = "tensorflow_inter_op_parallelism",
        value_name = "N",
        default_value_t = 0
    )]
    pub tensorflow_inter_op_parallelism: i64,
    #[arg(long = "use_alts_credentials", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub use_alts_credentials: bool,
    /// TensorFlow Serving's text-format SSLConfig (server_key, server_cert, custom_ca,
    /// client_verify): TLS on the gRPC and REST ports, verifying client certificates with
    /// client_verify.
    #[arg(long = "ssl_config_file", default_value = "")]
    pub ssl_config_file: String,
    /// TensorFlow Serving's text-format PlatformConfigMap: the tensorflow platform's
    /// SavedModelBundleSourceAdapterConfig legacy_config (session_config, batching_parameters,
    /// saved_model_tags, enable_model_warmup, model_warmup_options, mixed_precision) in place of
    /// the flags that set the same.
    #[arg(long = "platform_config_file", value_name = "F", default_value = "")]
    pub platform_config_file: String,
    /// The share of each GPU's memory TensorFlow takes (0: TensorFlow's default).
    #[arg(
        long = "per_process_gpu_memory_fraction",
        value_name = "FRACTION",
        default_value_t = 0.0
    )]
    pub per_process_gpu_memory_fraction: f32,
    #[arg(long = "grpc_max_threads", hide = true)]
    pub grpc_max_threads: Option<i32>,
    /// Replay each version's assets.extra/tf_serving_warmup_requests before it serves.
    #[arg(long = "enable_model_warmup", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = tf_bool)]
    pub enable_model_warmup: bool,
    /// How many times each warmup request is replayed (0: once).
    #[arg(
        long = "num_request_iterations_for_warmup",
        value_name = "N",
        default_value_t = 0
    )]
    pub num_request_iterations_for_warmup: i32,
    /// TensorFlow Serving's MonitoringConfig text proto: `prometheus_config { enable: true path:
    /// "/monitoring/prometheus/metrics" }` serves the security event counters on the REST port.
    #[arg(long = "monitoring_config_file", default_value = "")]
    pub monitoring_config_file: String,
    #[arg(long = "remove_unused_fields_from_bundle_metagraph", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = tf_bool)]
    pub remove_unused_fields_from_bundle_metagraph: Option<bool>,
    #[arg(long = "prefer_tflite_model", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub prefer_tflite_model: bool,
    #[arg(long = "num_tflite_pools", hide = true)]
    pub num_tflite_pools: Option<i32>,
    #[arg(long = "num_tflite_interpreters_per_pool", hide = true)]
    pub num_tflite_interpreters_per_pool: Option<i32>,
    /// Let functions marked for XLA (jit_compile) compile; without this or
    /// --xla_gpu_compilation_enabled they fail, as in TensorFlow Serving.
    #[arg(long = "xla_cpu_compilation_enabled", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub xla_cpu_compilation_enabled: bool,
    /// The same as --xla_cpu_compilation_enabled (TensorFlow Serving's: XLA on CPUs and GPUs).
    #[arg(long = "xla_gpu_compilation_enabled", value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = tf_bool)]
    pub xla_gpu_compilation_enabled: bool,
    #[arg(long = "enable_profiler", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = tf_bool)]
    pub enable_profiler: Option<bool>,
    #[arg(
        long = "thread_pool_factory_config_file",
        hide = true,
        default_value = ""
    )]
    pub thread_pool_factory_config_file: String,
    /// `bfloat16`: TensorFlow's oneDNN bfloat16 auto mixed precision (another mode: a warning,
    /// as in TensorFlow Serving).
    #[arg(long = "mixed_precision", value_name = "MODE", default_value = "")]
    pub mixed_precision: String,
    #[arg(long = "skip_initialize_tpu", hide = true, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = tf_bool)]
    pub skip_initialize_tpu: Option<bool>,
}

/// TensorFlow Serving's `SessionBundleConfig`: how every version's sandbox loads and runs it.
#[derive(Debug)]
pub struct Bundle {
    pub session: tfsandbox::SessionConfig,
    pub batching: Option<tfsandbox_serve::BatchingParameters>,
    pub per_model_batching: bool,
    /// The MetaGraph tags to load; empty: `serve`.
    pub tags: Vec<String>,
    /// How many times warmup replays each record; `None`: no warmup.
    pub warmup: Option<u32>,
}

/// What `--grpc_channel_arguments` asks of the gRPC server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelArguments {
    pub max_receive_message_bytes: Option<usize>,
    pub max_send_message_bytes: Option<usize>,
    pub reuse_address: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub max_connection_idle: Option<Duration>,
    pub keepalive_time: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub max_connection_age: Option<Duration>,
    pub max_connection_age_grace: Option<Duration>,
}

/// Channel arguments that only a client acts on; on a server they change nothing, in TensorFlow
/// Serving too, so they are taken with a warning.
const CLIENT_ONLY_ARGUMENTS: &[&str] = &["grpc.lb_policy_name", "grpc.primary_user_agent"];

/// gRPC's message-size arguments: -1 is unlimited, which TensorFlow Serving's server caps at
/// INT32_MAX, as it does its own default.
fn message_size(key: &str, value: i64) -> Result<usize> {
    match value {
        -1 => Ok(i32::MAX as usize),
        0.. => Ok(usize::try_from(value)?),
        _ => bail!("--grpc_channel_arguments: {key}={value}: give a size in bytes or -1"),
    }
}

fn millis(key: &str, value: i64) -> Result<Duration> {
    match u64::try_from(value) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => {
            bail!("--grpc_channel_arguments: {key}={value}: give a positive number of milliseconds")
        }
    }
}

/// Parses `key=value,key=value`, as TensorFlow Serving does; a later key wins. A key not done
/// here is refused by name.
pub fn parse_channel_arguments(text: &str) -> Result<ChannelArguments> {
    let mut args = ChannelArguments::default();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--grpc_channel_arguments: '{pair}' is not KEY=VALUE");
        };
        let (key, value) = (key.trim(), value.trim());
        let int = || -> Result<i64> {
            value.parse().map_err(|_| {
                anyhow::anyhow!("--grpc_channel_arguments: {key}={value}: not an integer")
            })
        };
        match key {
            "grpc.max_receive_message_length" => {
                args.max_receive_message_bytes = Some(message_size(key, int()?)?)
            }
            "grpc.max_send_message_length" => {
                args.max_send_message_bytes = Some(message_size(key, int()?)?)
            }
            "grpc.so_reuseaddr" => args.reuse_address = Some(int()? != 0),
            "grpc.max_concurrent_streams" => {
                args.max_concurrent_streams = Some(u32::try_from(int()?).map_err(|_| {
                    anyhow::anyhow!("--grpc_channel_arguments: {key}={value}: out of range")
                })?)
            }
            "grpc.max_connection_idle_ms" => args.max_connection_idle = Some(millis(key, int()?)?),
            "grpc.keepalive_time_ms" => args.keepalive_time = Some(millis(key, int()?)?),
            "grpc.keepalive_timeout_ms" => args.keepalive_timeout = Some(millis(key, int()?)?),
            "grpc.max_connection_age_ms" => args.max_connection_age = Some(millis(key, int()?)?),
            "grpc.max_connection_age_grace_ms" => {
                args.max_connection_age_grace = Some(millis(key, int()?)?)
            }
            _ if CLIENT_ONLY_ARGUMENTS.contains(&key) => {
                tracing::warn!("--grpc_channel_arguments: {key} has no effect on a server")
            }
            _ => bail!("--grpc_channel_arguments: {key}: {NOT_YET}"),
        }
    }
    Ok(args)
}

impl TfServingFlags {
    /// Refuses every flag set to something not done here, naming each with its reason; warns of
    /// the flags that cannot matter here.
    pub fn check(&self) -> Result<()> {
        let mut refused: Vec<String> = Vec::new();
        let mut refuse = |given: bool, flag: &str, why: &str| {
            if given {
                refused.push(format!("--{flag}: {why}"));
            }
        };
        refuse(self.use_alts_credentials, "use_alts_credentials", ALTS);
        refuse(self.prefer_tflite_model, "prefer_tflite_model", TFLITE);
        refuse(self.num_tflite_pools.is_some(), "num_tflite_pools", TFLITE);
        refuse(
            self.num_tflite_interpreters_per_pool.is_some(),
            "num_tflite_interpreters_per_pool",
            TFLITE,
        );
        refuse(
            self.enable_profiler == Some(true),
            "enable_profiler",
            PROFILER,
        );
        refuse(
            !self.thread_pool_factory_config_file.is_empty(),
            "thread_pool_factory_config_file",
            THREAD_POOL_FACTORY,
        );
        if !refused.is_empty() {
            bail!("{}", refused.join("\n"));
        }

        let given = [
            self.flush_filesystem_caches.is_some(),
            self.remove_unused_fields_from_bundle_metagraph.is_some(),
            self.skip_initialize_tpu.is_some(),
            self.grpc_max_threads.is_some(),
        ];
        for (&(flag, why), given) in NO_EFFECT.iter().zip(given) {
            if given {
                tracing::warn!("--{flag} has no effect here: {why}");
            }
        }
        Ok(())
    }

    /// `--rest_api_num_threads`; unset: four per CPU, TensorFlow Serving's default.
    pub fn rest_api_threads(&self) -> usize {
        match self.rest_api_num_threads {
            Some(n) => n.max(1) as usize,
            None => 4 * std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// `--num_load_threads` and `--num_unload_threads` as bounds (0: none).
    pub fn load_threads(&self) -> (Option<usize>, Option<usize>) {
        let bound = |n: i32| usize::try_from(n).ok().filter(|&n| n > 0);
        (bound(self.num_load_threads), bound(self.num_unload_threads))
    }

    /// `--max_num_load_retries` and `--load_retry_interval_micros`.
    pub fn load_retries(&self) -> tfsandbox_serve::LoadRetries {
        tfsandbox_serve::LoadRetries {
            max: self.max_num_load_retries.max(0) as u32,
            interval: Duration::from_micros(self.load_retry_interval_micros.max(0) as u64),
        }
    }

    /// `--model_config_file_poll_wait_seconds`, when it asks for polling.
    pub fn config_file_poll(&self) -> Option<Duration> {
        u64::try_from(self.model_config_file_poll_wait_seconds)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
    }

    /// What TensorFlow Serving keeps in its `SessionBundleConfig`: from `--platform_config_file`
    /// when it is given, in place of the flags that set the same things (which are then
    /// ignored, as there, with a warning here), else from those flags.
    pub fn bundle(&self) -> Result<Bundle> {
        // As TensorFlow Serving's main.cc: XLA compiles only with one of its flags, whatever
        // the platform config says.
        let disable_xla_compilation =
            !(self.xla_cpu_compilation_enabled || self.xla_gpu_compilation_enabled);
        if self.platform_config_file.is_empty() {
            let mut session = self.session_config()?;
            session.disable_xla_compilation = disable_xla_compilation;
            return Ok(Bundle {
                session,
                batching: self.batching()?,
                per_model_batching: self.enable_per_model_batching_parameters,
                tags: self.tags(),
                warmup: self.warmup(),
            });
        }
        let ignored = [
            ("enable_batching", self.enable_batching),
            (
                "batching_parameters_file",
                !self.batching_parameters_file.is_empty(),
            ),
            (
                "enable_per_model_batching_parameters",
                self.enable_per_model_batching_parameters,
            ),
            (
                "tensorflow_session_config_file",
                !self.tensorflow_session_config_file.is_empty(),
            ),
            (
                "per_process_gpu_memory_fraction",
                self.per_process_gpu_memory_fraction != 0.0,
            ),
            (
                "tensorflow_session_parallelism",
                self.tensorflow_session_parallelism != 0,
            ),
            (
                "tensorflow_intra_op_parallelism",
                self.tensorflow_intra_op_parallelism != 0,
            ),
            (
                "tensorflow_inter_op_parallelism",
                self.tensorflow_inter_op_parallelism != 0,
            ),
            ("saved_model_tags", !self.saved_model_tags.is_empty()),
            ("enable_model_warmup", !self.enable_model_warmup),
            (
                "num_request_iterations_for_warmup",
                self.num_request_iterations_for_warmup != 0,
            ),
            ("mixed_precision", !self.mixed_precision.is_empty()),
        ];
        for (flag, _) in ignored.iter().filter(|(_, given)| *given) {
            tracing::warn!("--{flag} has no effect with --platform_config_file, as in TensorFlow Serving: its legacy_config says instead");
        }
        let platform = tfsandbox_serve::read_platform_config(self.platform_config_file.as_ref())?;
        Ok(Bundle {
            session: tfsandbox::SessionConfig {
                config_proto: platform.config_proto,
                disable_xla_compilation,
                ..Default::default()
            },
            batching: platform.batching,
            per_model_batching: platform.per_model_batching,
            tags: platform.tags,
            warmup: platform.warmup,
        })
    }

    /// The worker's session options: `--tensorflow_session_config_file`, then what
    /// `--mixed_precision` adds to it, then the threads and the GPU memory fraction where their
    /// flags set them. TensorFlow Serving writes the threads and the fraction even when their
    /// flags are 0, overwriting the file's; here a file's own stay unless a flag sets them, as
    /// its help says ("can be overridden if needed").
    fn session_config(&self) -> Result<tfsandbox::SessionConfig> {
        let (intra_op_threads, inter_op_threads) = self.session_threads()?;
        let mut config_proto = if self.tensorflow_session_config_file.is_empty() {
            Vec::new()
        } else {
            tfsandbox_serve::read_session_config(self.tensorflow_session_config_file.as_ref())?
        };
        config_proto.extend(tfsandbox_serve::mixed_precision(&self.mixed_precision));
        let fraction = self.per_process_gpu_memory_fraction;
        if !(fraction.is_finite() && fraction >= 0.0) {
            bail!("--per_process_gpu_memory_fraction: {fraction} is not a number from 0 up");
        }
        Ok(tfsandbox::SessionConfig {
            intra_op_threads,
            inter_op_threads,
            gpu_memory_fraction: fraction.into(),
            disable_xla_compilation: false,
            config_proto,
        })
    }

    /// Each session's intra-op and inter-op threads, as TensorFlow Serving's `server.cc` picks
    /// them from the three parallelism flags (0: TensorFlow's default).
    fn session_threads(&self) -> Result<(u32, u32)> {
        let count = |flag: &str, n: i64| {
            u32::try_from(n.max(0))
                .map_err(|_| anyhow::anyhow!("--{flag}: {n} is too many threads"))
        };
        let session = count(
            "tensorflow_session_parallelism",
            self.tensorflow_session_parallelism,
        )?;
        let intra = count(
            "tensorflow_intra_op_parallelism",
            self.tensorflow_intra_op_parallelism,
        )?;
        let inter = count(
            "tensorflow_inter_op_parallelism",
            self.tensorflow_inter_op_parallelism,
        )?;
        if session > 0 && intra > 0 && inter > 0 {
            // TensorFlow Serving's own words.
            bail!("Either configure server_options.tensorflow_session_parallelism or (server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all.");
        }
        Ok(if intra > 0 || inter > 0 {
            (intra, inter)
        } else {
            (session, session)
        })
    }

    /// `--enable_batching` with `--batching_parameters_file`, as TensorFlow Serving takes them.
    fn batching(&self) -> Result<Option<tfsandbox_serve::BatchingParameters>> {
        if !self.enable_batching {
            if !self.batching_parameters_file.is_empty() {
                // TensorFlow Serving's words.
                bail!("server_options.batching_parameters_file is set without setting server_options.enable_batching to true.");
            }
            return Ok(None);
        }
        if self.batching_parameters_file.is_empty() {
            return Ok(Some(Default::default()));
        }
        Ok(Some(tfsandbox_serve::read_batching_parameters(
            std::path::Path::new(&self.batching_parameters_file),
        )?))
    }

    /// `--enable_model_warmup` with `--num_request_iterations_for_warmup`: how many times each
    /// warmup request is replayed, or `None` for no warmup.
    fn warmup(&self) -> Option<u32> {
        self.enable_model_warmup
            .then(|| self.num_request_iterations_for_warmup.max(1) as u32)
    }

    /// `--saved_model_tags` as a list; empty: the worker's default, `serve`.
    fn tags(&self) -> Vec<String> {
        self.saved_model_tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: TfServingFlags,
    }

    fn parse(args: &[&str]) -> Result<TfServingFlags, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.flags)
    }

    #[test]
    fn defaults_are_taken() {
        let flags = parse(&[]).unwrap();
        flags.check().unwrap();
        assert_eq!(flags.rest_api_timeout_in_ms, 30000);
        assert!(!flags.enable_grpc_healthcheck_service);
        assert!(flags.tags().is_empty());
    }

    #[test]
    fn both_forms_and_bare_booleans() {
        let flags = parse(&[
            "--saved_model_tags=serve,gpu",
            "--rest_api_timeout_in_ms",
            "5000",
            "--enable_grpc_healthcheck_service",
            "--enable_serialization_as_tensor_content=1",
            "--enable_signature_method_name_check=false",
        ])
        .unwrap();
        assert_eq!(flags.tags(), ["serve", "gpu"]);
        assert_eq!(flags.rest_api_timeout_in_ms, 5000);
        assert!(flags.enable_grpc_healthcheck_service);
        assert!(flags.enable_serialization_as_tensor_content);
        assert!(!flags.enable_signature_method_name_check);
        assert!(parse(&["--enable_batching=yes"]).is_err());
    }

    #[test]
    fn load_retries_and_config_polling_take_tensorflow_servings_defaults() {
        let flags = parse(&[]).unwrap();
        let retries = flags.load_retries();
        assert_eq!(
            (retries.max, retries.interval),
            (5, Duration::from_secs(60))
        );
        assert_eq!(flags.config_file_poll(), None);
        let flags = parse(&[
            "--max_num_load_retries=2",
            "--load_retry_interval_micros=-1",
            "--model_config_file_poll_wait_seconds=3",
        ])
        .unwrap();
        flags.check().unwrap();
        let retries = flags.load_retries();
        assert_eq!((retries.max, retries.interval), (2, Duration::ZERO));
        assert_eq!(flags.config_file_poll(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn session_threads_as_tensorflow_serving_picks_them() {
        let threads = |args: &[&str]| parse(args).unwrap().session_threads();
        assert_eq!(threads(&[]).unwrap(), (0, 0));
        assert_eq!(
            threads(&["--tensorflow_session_parallelism=3"]).unwrap(),
            (3, 3)
        );
        assert_eq!(
            threads(&[
                "--tensorflow_session_parallelism=3",
                "--tensorflow_intra_op_parallelism=2"
            ])
            .unwrap(),
            (2, 0)
        );
        let all = threads(&[
            "--tensorflow_session_parallelism=3",
            "--tensorflow_intra_op_parallelism=2",
            "--tensorflow_inter_op_parallelism=1",
        ]);
        assert!(all
            .unwrap_err()
            .to_string()
            .contains("You cannot configure all"));
    }

    #[test]
    fn session_config_is_the_file_then_the_flags() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "intra_op_parallelism_threads: 7 gpu_options { allow_growth: true }",
        )
        .unwrap();
        let flag = format!("--tensorflow_session_config_file={}", file.path().display());
        assert!(
            parse(&[&flag])
                .unwrap()
                .bundle()
                .unwrap()
                .session
                .disable_xla_compilation
        );
        let config = parse(&[&flag]).unwrap().session_config().unwrap();
        // The file's threads stay when no flag sets them.
        assert_eq!(
            (config.intra_op_threads, config.gpu_memory_fraction),
            (0, 0.0)
        );
        assert_eq!(config.to_config_proto(), [0x10, 7, 0x32, 2, 0x20, 1]);
        let config = parse(&[
            &flag,
            "--tensorflow_intra_op_parallelism=2",
            "--per_process_gpu_memory_fraction=0.5",
            "--mixed_precision=bfloat16",
            "--xla_cpu_compilation_enabled",
        ])
        .unwrap()
        .bundle()
        .unwrap()
        .session;
        assert!(!config.disable_xla_compilation);
        // The file, mixed precision's rewrite option, then the flags, which protobuf's parser
        // lets override the file's fields.
        let mut expected = vec![0x10, 7, 0x32, 2, 0x20, 1];
        expected.extend([0x52, 5, 0x52, 3, 0xf8, 1, 1]);
        expected.extend([0x10, 2]);
        expected.extend([0x32, 9, 0x09]);
        expected.extend(0.5f64.to_le_bytes());
        assert_eq!(config.to_config_proto(), expected);

        std::fs::write(file.path(), "cluster_def { }").unwrap();
        let error = format!(
            "{:#}",
            parse(&[&flag]).unwrap().session_config().unwrap_err()
        );
        assert!(
            error.contains("Error parsing text-format tensorflow.ConfigProto: cluster_def: not a field tfsandbox serve supports"),
            "{error}"
        );
    }

    #[test]
    fn a_platform_config_takes_the_place_of_the_flags() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "platform_configs { key: 'tensorflow' value { source_adapter_config { \
             [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] { \
             legacy_config { session_config { inter_op_parallelism_threads: 2 } \
             batching_parameters { max_batch_size { value: 4 } } saved_model_tags: 'tpu' } } } } }",
        )
        .unwrap();
        let bundle = parse(&[
            &format!("--platform_config_file={}", file.path().display()),
            "--tensorflow_intra_op_parallelism=9",
            "--saved_model_tags=serve",
        ])
        .unwrap()
        .bundle()
        .unwrap();
        // The flags' threads and tags are ignored; warmup is off, as the file does not ask.
        assert_eq!(bundle.session.to_config_proto(), [0x28, 2]);
        assert!(bundle.session.disable_xla_compilation);
        assert_eq!(bundle.batching.unwrap().max_batch_size, 4);
        assert_eq!(bundle.tags, ["tpu"]);
        assert_eq!(bundle.warmup, None);
    }

    #[test]
    fn refusals_name_every_flag_and_why() {
        let flags = parse(&[
            "--prefer_tflite_model=true",
            "--use_alts_credentials",
            "--thread_pool_factory_config_file=/etc/pools",
            "--max_num_load_retries=0",
            "--load_retry_interval_micros=5",
        ])
        .unwrap();
        let message = flags.check().unwrap_err().to_string();
        assert!(message.contains("--prefer_tflite_model: not supported: the sandbox's worker runs TensorFlow SavedModels, not TensorFlow Lite"), "{message}");
        assert!(
            message.contains("--use_alts_credentials: not supported: ALTS"),
            "{message}"
        );
        assert!(
            message.contains(
                "--thread_pool_factory_config_file: not supported: it names a thread pool factory"
            ),
            "{message}"
        );
        assert!(!message.contains("load_retr"), "{message}");
        assert_eq!(parse(&[]).unwrap().warmup(), Some(1));
        assert_eq!(
            parse(&["--enable_model_warmup=false"]).unwrap().warmup(),
            None
        );
        assert_eq!(
            parse(&["--num_request_iterations_for_warmup=3"])
                .unwrap()
                .warmup(),
            Some(3)
        );
        assert!(parse(&["--flush_filesystem_caches=false"])
            .unwrap()
            .check()
            .is_ok());
        // Honoured now (TLS, and client certificates with client_verify), so not refused.
        assert!(parse(&["--ssl_config_file=/etc/ssl.config"])
            .unwrap()
            .check()
            .is_ok());
    }

    #[test]
    fn channel_arguments() {
        let args = parse_channel_arguments(
            "grpc.max_receive_message_length=1024, grpc.so_reuseaddr=1,grpc.max_send_message_length=-1",
        )
        .unwrap();
        assert_eq!(args.max_receive_message_bytes, Some(1024));
        assert_eq!(args.max_send_message_bytes, Some(i32::MAX as usize));
        assert_eq!(args.reuse_address, Some(true));
        assert_eq!(
            parse_channel_arguments("").unwrap(),
            ChannelArguments::default()
        );
        let args =
            parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb")
                .unwrap();
        assert_eq!(args.max_connection_age, Some(Duration::from_secs(2)));
        let error = parse_channel_arguments("grpc.http2.max_frame_size=5")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("grpc.http2.max_frame_size: not supported yet"),
            "{error}"
        );
        assert!(parse_channel_arguments("grpc.max_receive_message_length=big").is_err());
        assert!(parse_channel_arguments("novalue").is_err());
    }
}
