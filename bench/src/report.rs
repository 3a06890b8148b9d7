//! The report: the headline figures as JSON, and the tables of BENCHMARKS.md.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::bare::Echo;
use crate::concurrency::Concurrency;
use crate::flood::{Flood, FLOOD_CALLERS};
use crate::image_size::ImageSize;
use crate::memory::mib;
use crate::raw;
use crate::sandbox::RuntimeFigures;
use crate::serve::{ServePath, CALLERS};
use crate::stats::{micros, millis, Samples};
use crate::Plan;

const BEGIN: &str = "<!-- tfsandbox bench: begin -->";
const END: &str = "<!-- tfsandbox bench: end -->";

/// Everything one run measured.
pub struct Figures {
    pub in_process: Samples,
    pub raw: raw::Limits,
    pub echo: Echo,
    pub bare_start: Duration,
    /// Resident bytes of the bare worker with half_plus_two loaded.
    pub bare_worker_rss: u64,
    pub process: RuntimeFigures,
    pub docker: Option<RuntimeFigures>,
    pub gvisor: Option<RuntimeFigures>,
    pub concurrency: Concurrency,
    pub flood: Flood,
    pub serve: ServePath,
    pub image: ImageSize,
}

impl Figures {
    /// Calls per second of one sandbox with `callers` concurrent callers.
    fn one_calls(&self, callers: usize) -> Option<f64> {
        self.concurrency
            .iter()
            .find(|(c, _, _)| *c == callers)
            .map(|(_, one, _)| one.per_second())
    }
}

pub fn headline(f: &Figures) -> Value {
    let (raw, process, docker, gvisor) = (&f.raw, &f.process, &f.docker, &f.gvisor);
    let (bare_rtt, in_process, bare_start) = (&f.echo.rtt, &f.in_process, f.bare_start);
    let process_gib_s = at(&process.gib_s, 64);
    let mut headline = json!({
        "raw_pipe_gib_s": raw.gib_s,
        "raw_pipe_rtt_us": micros(raw.rtt.p50()),
        "rtt_us_process": micros(process.rtt.p50()),
        "rtt_us_bare": micros(bare_rtt.p50()),
        "rtt_us_in_process_tf": micros(in_process.p50()),
        "rtt_ratio_bare_vs_raw_pipe": ratio(micros(bare_rtt.p50()), micros(raw.rtt.p50())),
        "rtt_ratio_process_vs_bare_plus_tf": ratio(micros(process.rtt.p50()), micros(bare_rtt.p50()) + micros(in_process.p50())),
        "gib_ratio_process_vs_raw_pipe_64mib": process_gib_s.map(|p| ratio(p, raw.gib_s)),
        "gib_ratio_docker_vs_process_64mib": docker.as_ref().and_then(|d| at(&d.gib_s, 64)).zip(process_gib_s).map(|(d, p)| ratio(d, p)),
        "rtt_ratio_process_vs_bare": ratio(micros(process.rtt.p50()), micros(bare_rtt.p50())),
        "rtt_ratio_docker_vs_process": docker.as_ref().map(|d| ratio(micros(d.rtt.p50()), micros(process.rtt.p50()))),
        "gib_s_process_64mib": at(&process.gib_s, 64),
        "gib_s_docker_64mib": docker.as_ref().and_then(|d| at(&d.gib_s, 64)),
        "speedup_64_concurrent": f.one_calls(64).zip(f.one_calls(1)).map(|(a, b)| ratio(a, b)),
        "setup_ms_process": millis(process.start.saturating_sub(bare_start)),
        "setup_ms_docker": docker.as_ref().map(|d| millis(d.start.saturating_sub(bare_start))),
        "rtt_us_gvisor": gvisor.as_ref().map(|g| micros(g.rtt.p50())),
        "rtt_ratio_gvisor_vs_process": gvisor.as_ref().map(|g| ratio(micros(g.rtt.p50()), micros(process.rtt.p50()))),
        "gib_s_gvisor_64mib": gvisor.as_ref().and_then(|g| at(&g.gib_s, 64)),
        "gib_ratio_gvisor_vs_process_64mib": gvisor.as_ref().and_then(|g| at(&g.gib_s, 64)).zip(process_gib_s).map(|(g, p)| ratio(g, p)),
        "start_ms_gvisor": gvisor.as_ref().map(|g| millis(g.start)),
        "start_ratio_gvisor_vs_process": gvisor.as_ref().map(|g| ratio(millis(g.start), millis(process.start))),
        "p99_us_other_tenant_unloaded": micros(f.flood.unloaded.p99()),
        "p99_us_other_tenant_flooded": micros(f.flood.flooded.p99()),
        "p99_ratio_other_tenant_flooded_vs_unloaded": ratio(micros(f.flood.flooded.p99()), micros(f.flood.unloaded.p99())),
        "image_minus_closure_bytes": f.image.archive_bytes as i64 - f.image.closure_bytes as i64,
        "cold_first_answer_ms_process": millis(process.cold_first_answer),
        "cold_first_answer_ms_docker": docker.as_ref().map(|d| millis(d.cold_first_answer)),
        "warm_first_answer_ms_process": millis(process.warm_first_answer),
        "warm_first_answer_ms_docker": docker.as_ref().map(|d| millis(d.warm_first_answer)),
        "host_rss_mib_per_sandbox_process": mib(process.host_rss_per_sandbox),
        "host_rss_mib_per_sandbox_docker": docker.as_ref().map(|d| mib(d.host_rss_per_sandbox)),
        "worker_rss_mib_bare": mib(f.bare_worker_rss),
        "worker_rss_mib_process": process.worker_rss.map(mib),
        "worker_rss_ratio_process_vs_bare": process.worker_rss.map(|w| ratio(mib(w), mib(f.bare_worker_rss))),
    });
    // The serve path's keys, apart: one json! of every key passes the macro's recursion limit.
    let serve = json!({
        "serve_rtt_us_tcp": micros(f.serve.tcp.p50()),
        "serve_rtt_us_unix": micros(f.serve.unix.p50()),
        "serve_rtt_us_library": micros(f.serve.library.p50()),
        "loopback_rtt_us": micros(f.serve.loopback.p50()),
        "serve_rtt_ratio_tcp_vs_unix": ratio(micros(f.serve.tcp.p50()), micros(f.serve.unix.p50())),
        "serve_rtt_ratio_tcp_vs_library_plus_loopback": ratio(micros(f.serve.tcp.p50()), micros(f.serve.library.p50()) + micros(f.serve.loopback.p50())),
        "serve_calls_per_s_64_unbatched": f.serve.unbatched.per_second(),
        "serve_calls_per_s_64_batched": f.serve.batched.per_second(),
        "serve_batching_speedup_64": ratio(f.serve.batched.per_second(), f.serve.unbatched.per_second()),
    });
    if let (Some(all), Value::Object(serve)) = (headline.as_object_mut(), serve) {
        all.extend(serve);
    }
    headline
}

/// The bench section of BENCHMARKS.md.
pub fn markdown(plan: &Plan, quick: bool, f: &Figures, headline: &Value) -> Result<String> {
    let (raw, process, docker, gvisor) = (&f.raw, &f.process, &f.docker, &f.gvisor);
    let (bare_rtt, bare_start) = (&f.echo.rtt, f.bare_start);
    let mut md = String::new();
    let machine = machine();
    md.push_str(&format!(
        "Measured {} on {machine}, commit {}, {} build, `{}`. Every ratio is to a baseline of the same run.\n\n",
        today(),
        commit(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        if quick { "tfsandbox bench --quick" } else { "tfsandbox bench" },
    ));
    md.push_str("### 1. Round trip of a tiny Predict (half_plus_two, 1×1 float32)\n\n");
    md.push_str("| path | p50 µs | p99 µs | calls/s | p50 vs bare echo |\n|---|---|---|---|---|\n");
    let bare_p50 = micros(bare_rtt.p50());
    let mut rtt_row = |name: &str, s: &Samples| {
        md.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2}× |\n",
            micros(s.p50()),
            micros(s.p99()),
            s.per_second(),
            ratio(micros(s.p50()), bare_p50)
        ));
    };
    rtt_row(
        "raw pipe pair to a child process: 1 byte there and back, no framing",
        &raw.rtt,
    );
    rtt_row("TensorFlow in this process (no transport)", &f.in_process);
    rtt_row(
        "echo in this process over a pipe pair (yamux + HTTP/2 + gRPC)",
        &f.echo.same_process_rtt,
    );
    rtt_row(
        "**bare**: the same echo in a child process over its stdin/stdout",
        bare_rtt,
    );
    rtt_row("process sandbox", &process.rtt);
    if let Some(d) = docker {
        rtt_row("docker sandbox", &d.rtt);
    }
    if let Some(g) = gvisor {
        rtt_row("gvisor sandbox", &g.rtt);
    }
    md.push_str(&format!(
        "\nBare echo vs raw pipe: **{:.2}×** (goal ≤ 2×); process sandbox vs bare echo + in-process TensorFlow: **{:.2}×** (goal ≤ 1.2×); docker vs process: **{}** (goal ≤ 1.2×); gvisor vs process: **{}** (no goal: the cost of gVisor's kernel).\n\n",
        headline["rtt_ratio_bare_vs_raw_pipe"].as_f64().unwrap_or(f64::NAN),
        headline["rtt_ratio_process_vs_bare_plus_tf"].as_f64().unwrap_or(f64::NAN),
        fmt_ratio(&headline["rtt_ratio_docker_vs_process"]),
        fmt_ratio(&headline["rtt_ratio_gvisor_vs_process"]),
    ));

    md.push_str("### 2. Large tensors (identity, uint8; GiB/s of bytes in + out)\n\n");
    md.push_str("| MiB each way | bare echo (child process) | process | process vs bare | docker | docker vs bare | gvisor | gvisor vs bare |\n|---|---|---|---|---|---|---|---|\n");
    for &mib in &plan.sizes_mib {
        let bare = at(&f.echo.gib_s, mib).unwrap_or(f64::NAN);
        let p = at(&process.gib_s, mib).unwrap_or(f64::NAN);
        let d = docker.as_ref().and_then(|d| at(&d.gib_s, mib));
        let g = gvisor.as_ref().and_then(|g| at(&g.gib_s, mib));
        md.push_str(&format!(
            "| {mib} | {bare:.2} | {p:.2} | {:.2}× | {} | {} | {} | {} |\n",
            p / bare,
            d.map_or("n/a".into(), |d| format!("{d:.2}")),
            d.map_or("n/a".into(), |d| format!("{:.2}×", d / bare)),
            g.map_or("n/a".into(), |g| format!("{g:.2}")),
            g.map_or("n/a".into(), |g| format!("{:.2}×", g / bare)),
        ));
    }
    md.push_str(&format!(
        "\nRaw pipe pair to a child process, {} MiB each way in {} KiB writes, no framing: **{:.2} GiB/s**. \
         Process at 64 MiB vs raw pipe: **{}** (goal ≥ 0.5×); docker vs process: **{}** (goal ≥ 0.9×); gvisor vs process: **{}**.\n\n",
        plan.largest_mib(),
        raw::WRITE_BYTES >> 10,
        raw.gib_s,
        fmt_ratio(&headline["gib_ratio_process_vs_raw_pipe_64mib"]),
        fmt_ratio(&headline["gib_ratio_docker_vs_process_64mib"]),
        fmt_ratio(&headline["gib_ratio_gvisor_vs_process_64mib"]),
    ));

    md.push_str("### 3. Concurrent callers (process runtime, half_plus_two)\n\n");
    md.push_str("| callers | one sandbox calls/s | p99 ms | vs 1 caller | pool of 2 calls/s | p99 ms | pool vs one |\n|---|---|---|---|---|---|---|\n");
    let single = f.one_calls(1).unwrap_or(f64::NAN);
    for (callers, one, pooled) in &f.concurrency {
        md.push_str(&format!(
            "| {callers} | {:.0} | {:.2} | {:.2}× | {:.0} | {:.2} | {:.2}× |\n",
            one.per_second(),
            millis(one.p99()),
            one.per_second() / single,
            pooled.per_second(),
            millis(pooled.p99()),
            pooled.per_second() / one.per_second()
        ));
    }

    let flood = &f.flood;
    md.push_str(&format!(
        "\nA flood on one tenant: {FLOOD_CALLERS} callers keep a busy_loop model's sandbox full while another \
         sandbox's half_plus_two is called one call at a time. That other tenant's p99: **{:.2} ms** unloaded, \
         **{:.2} ms** flooded: **{}** (goal ≤ 2×; p50 {:.2} → {:.2} ms).\n",
        millis(flood.unloaded.p99()),
        millis(flood.flooded.p99()),
        fmt_ratio(&headline["p99_ratio_other_tenant_flooded_vs_unloaded"]),
        millis(flood.unloaded.p50()),
        millis(flood.flooded.p50()),
    ));

    md.push_str("\n### 4. Cold start: start → first answer → model loaded (medians)\n\n");
    md.push_str("| | start to first answer ms | sandbox setup ms (vs bare worker) | model load ms |\n|---|---|---|---|\n");
    md.push_str(&format!(
        "| bare worker (no sandbox): exec, loading libtensorflow, first answer | {:.0} | — | — |\n",
        millis(bare_start)
    ));
    let mut start_row = |name: &str, runtime: &RuntimeFigures, goal: Option<&str>| {
        md.push_str(&format!(
            "| {name} | {:.0} | **{:.0}**{} | {:.0} |\n",
            millis(runtime.start),
            millis(runtime.start.saturating_sub(bare_start)),
            goal.map_or(String::new(), |g| format!(" (goal ≤ {g})")),
            millis(runtime.model_load)
        ));
    };
    start_row("process sandbox", process, Some("150"));
    if let Some(d) = docker {
        start_row("docker sandbox", d, Some("400"));
    }
    if let Some(g) = gvisor {
        start_row("gvisor sandbox", g, None);
    }
    md.push_str(&format!(
        "\ngvisor vs process, start to first answer: **{}**.\n",
        fmt_ratio(&headline["start_ratio_gvisor_vs_process"])
    ));

    md.push_str("\n### 4b. First answer, cold and warm; memory (medians)\n\n");
    md.push_str("| | cold: new sandbox, load, first Predict ms | warm: pre-started pool, request to answer ms | host RSS per sandbox MiB | worker RSS MiB (half_plus_two loaded) |\n|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| bare worker (no sandbox) | — | — | — | {:.1} |\n",
        mib(f.bare_worker_rss)
    ));
    let mut answer_row = |name: &str, runtime: &RuntimeFigures| {
        md.push_str(&format!(
            "| {name} | {:.0} | **{:.1}** (goal ≤ 20) | {:.1} | {} |\n",
            millis(runtime.cold_first_answer),
            millis(runtime.warm_first_answer),
            mib(runtime.host_rss_per_sandbox),
            runtime
                .worker_rss
                .map_or("n/a (no host pid)".into(), |w| format!("{:.1}", mib(w))),
        ));
    };
    answer_row("process sandbox (jailer and worker)", process);
    if let Some(d) = docker {
        answer_row("docker sandbox", d);
    }
    if let Some(g) = gvisor {
        answer_row("gvisor sandbox", g);
    }

    let image = &f.image;
    md.push_str("\n### 5. Image\n\n| | bytes | vs closure |\n|---|---|---|\n");
    md.push_str(&format!(
        "| closure (worker + every library it loads) | {} | 1 |\n| image archive | {} | +{} bytes |\n| worker alone | {} | {:.3} |\n",
        image.closure_bytes,
        image.archive_bytes,
        image.archive_bytes as i64 - image.closure_bytes as i64,
        image.worker_bytes,
        image.worker_bytes as f64 / image.closure_bytes as f64
    ));
    let serve = &f.serve;
    md.push_str("\n### 6. The serve path: a TensorFlow Serving client's Predict through `tfsandbox serve` (half_plus_two, 1×1)\n\n");
    md.push_str("| path | p50 µs | p99 µs | calls/s |\n|---|---|---|---|\n");
    for (name, s) in [
        (
            "library call (`Model::predict`, process sandbox)",
            &serve.library,
        ),
        ("loopback TCP, 1 byte there and back", &serve.loopback),
        ("serve over its Unix socket", &serve.unix),
        ("serve over TCP", &serve.tcp),
    ] {
        md.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} |\n",
            micros(s.p50()),
            micros(s.p99()),
            s.per_second()
        ));
    }
    md.push_str(&format!(
        "\nTCP vs the Unix socket: **{}** (goal ≤ 1.3×); TCP vs the library call plus one loopback round trip: **{}** (goal ≤ 1.5×).\n",
        fmt_ratio(&headline["serve_rtt_ratio_tcp_vs_unix"]),
        fmt_ratio(&headline["serve_rtt_ratio_tcp_vs_library_plus_loopback"]),
    ));
    md.push_str(&format!(
        "\nBatching: {CALLERS} callers over TCP, each calling again once answered: **{:.0}** calls/s without `--enable_batching`, **{:.0}** with it (max_batch_size {CALLERS}, batch_timeout_micros 0, one batch thread): **{}** (goal ≥ 2×).\n",
        serve.unbatched.per_second(),
        serve.batched.per_second(),
        fmt_ratio(&headline["serve_batching_speedup_64"]),
    ));

    md.push_str(&format!(
        "\nHeadline (`--json`): `{}`\n",
        serde_json::to_string(headline)?
    ));
    Ok(md)
}

fn at(figures: &[(usize, f64)], mib: usize) -> Option<f64> {
    figures.iter().find(|(m, _)| *m == mib).map(|(_, g)| *g)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::NAN
    } else {
        a / b
    }
}

fn fmt_ratio(value: &Value) -> String {
    value
        .as_f64()
        .map_or("n/a (runtime left out)".into(), |r| format!("{r:.2}×"))
}

/// Replaces the bench section of `path` (created if missing), keeping everything around it.
pub fn write_section(path: &Path, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let section = format!("{BEGIN}\n{body}{END}");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

fn commit() -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match run(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{hash} (with uncommitted changes)"),
            _ => hash,
        },
        None => "unknown".into(),
    }
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
