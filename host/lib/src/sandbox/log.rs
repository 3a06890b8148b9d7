//! A worker's stderr, forwarded to the host's log: hostile bytes, so bounded and made harmless.
//!
//! - A line holds at most [`MAX_LINE_BYTES`]; the rest of it is dropped and the line says so.
//! - Past a rate ([`RATE_BYTES_PER_SECOND`] after a [`BURST_BYTES`] burst) whole lines are dropped,
//!   and the count of dropped bytes is logged once lines flow again.
//! - Every control character (and every bidi or zero-width format character) is escaped, so a
//!   line can neither end early nor redraw the terminal, and each is tagged with its worker.
//!
//! At most one partial line, one read buffer and the kept tail are held: well under 1 MiB.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The longest line kept, in bytes of the worker's output and again after escaping.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Worker stderr lines kept for error messages.
pub const TAIL_LINES: usize = 20;
/// The sustained rate of forwarded log bytes...
pub const RATE_BYTES_PER_SECOND: f64 = 256.0 * 1024.0;
/// ...after a burst of this many.
pub const BURST_BYTES: f64 = 1024.0 * 1024.0;

const READ_BYTES: usize = 8 * 1024;

/// The last lines a worker wrote, for error messages.
pub type Tail = Arc<Mutex<VecDeque<String>>>;

/// Forwards `stderr` until it closes or fails.
pub async fn forward(
    worker: String,
    mut stderr: Box<dyn AsyncRead + Send + Unpin>,
    tail: Tail,
    events: crate::events::Events,
) {
    let mut lines = Lines::new(Instant::now());
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for event in lines.push(&buf[..n], Instant::now()) {
            emit(&worker, &tail, &events, event);
        }
    }
    for event in lines.finish() {
        emit(&worker, &tail, &events, event);
    }
}

fn emit(worker: &str, tail: &Tail, events: &crate::events::Events, event: Event) {
    match event {
        Event::Line(line) => {
            tracing::info!(target: "tfsandbox::worker", "[worker {worker}] {line}");
            let mut tail = tail.lock().expect("stderr lock");
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Event::Dropped(bytes) => {
            tracing::warn!(
                target: "tfsandbox::worker",
                "[worker {worker}] {bytes} bytes of log dropped: over {} KiB/s",
                RATE_BYTES_PER_SECOND as u64 / 1024
            );
            events.emit(crate::events::Event::LogDropped {
                worker: worker.to_string(),
                bytes,
            });
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A line, escaped, cut and tagged as cut where it was too long.
    Line(String),
    /// Bytes dropped over the rate limit since the last line forwarded.
    Dropped(u64),
}

/// Splits bytes into bounded lines and applies the rate limit; no I/O, so it is tested alone.
pub struct Lines {
    line: Vec<u8>,
    /// Bytes of the current line past [`MAX_LINE_BYTES`].
    cut: usize,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl Lines {
    pub fn new(now: Instant) -> Lines {
        Lines {
            line: Vec::new(),
            cut: 0,
            tokens: BURST_BYTES,
            refilled: now,
            dropped: 0,
        }
    }

    /// Takes bytes the worker wrote; returns what to log.
    pub fn push(&mut self, mut bytes: &[u8], now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        while !bytes.is_empty() {
            let (part, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            let room = MAX_LINE_BYTES - self.line.len();
            let kept = part.len().min(room);
            self.line.extend_from_slice(&part[..kept]);
            self.cut += part.len() - kept;
            bytes = &bytes[part.len() + usize::from(ended)..];
            if ended {
                self.end_line(now, &mut events);
            }
        }
        events
    }

    /// The stream ended: what is left of the last line.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.line.is_empty() || self.cut > 0 {
            let now = self.refilled;
            self.end_line(now, &mut events);
        }
        if self.dropped > 0 {
            events.push(Event::Dropped(std::mem::take(&mut self.dropped)));
        }
        events
    }

    fn end_line(&mut self, now: Instant, events: &mut Vec<Event>) {
        // What forwarding costs is the kept line; cut bytes were dropped as they came.
        let cost = (self.line.len() + 1) as f64;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * RATE_BYTES_PER_SECOND).min(BURST_BYTES);
        if self.tokens < cost {
            self.dropped += cost as u64;
        } else {
            self.tokens -= cost;
            if self.dropped > 0 {
                events.push(Event::Dropped(std::mem::take(&mut self.dropped)));
            }
            events.push(Event::Line(escape(&self.line, self.cut)));
        }
        self.line.clear();
        self.cut = 0;
    }
}

/// The line as text safe to print: invalid UTF-8 replaced, control and format characters
/// escaped (`\r`, `\u{1b}`), at most [`MAX_LINE_BYTES`] long, and marked when cut.
pub fn escape(line: &[u8], mut cut: usize) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len().min(MAX_LINE_BYTES));
    let mut chars = text.char_indices();
    for (at, c) in chars.by_ref() {
        let before = out.len();
        if c.is_control() || is_format(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_LINE_BYTES {
            out.truncate(before);
            cut += text.len() - at;
            break;
        }
    }
    if cut > 0 {
        out.push_str(&format!(" [line cut: {cut} more bytes]"));
    }
    out
}

/// Characters that reorder or hide text on a terminal: zero-width and bidi controls.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lines(events: Vec<Event>) -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Line(l) => Some(l),
                Event::Dropped(_) => None,
            })
            .collect()
    }

    #[test]
    fn control_characters_cannot_forge_or_redraw_a_line() {
        let forged = escape(
            b"ok\r\x1b[2KERROR tfsandbox: forged\x07\t\xff\xe2\x80\xae",
            0,
        );
        assert_eq!(
            forged,
            "ok\\r\\u{1b}[2KERROR tfsandbox: forged\\u{7}\\t\u{fffd}\\u{202e}"
        );
        assert!(!forged.chars().any(|c| c.is_control()));
    }

    #[test]
    fn a_line_without_end_is_held_to_the_limit_and_marked_cut() {
        let now = Instant::now();
        let mut split = Lines::new(now);
        for _ in 0..64 {
            assert!(split.push(&[b'a'; 1 << 20], now).is_empty());
            assert!(split.line.len() <= MAX_LINE_BYTES);
        }
        let out = lines(split.push(b"\nnext\n", now));
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            format!(
                "{} [line cut: {} more bytes]",
                "a".repeat(MAX_LINE_BYTES),
                (64 << 20) - MAX_LINE_BYTES
            )
        );
        assert_eq!(out[1], "next");
    }

    #[test]
    fn escaping_cannot_grow_a_line_past_the_limit() {
        let out = escape(&[0x1b; MAX_LINE_BYTES], 0);
        assert!(out.len() <= MAX_LINE_BYTES + 64, "{}", out.len());
        assert!(out.ends_with(" more bytes]"), "{out}");
    }

    #[test]
    fn past_the_rate_lines_are_dropped_and_counted() {
        let start = Instant::now();
        let mut split = Lines::new(start);
        let line = [b'x'; 1023];
        let mut events = Vec::new();
        for _ in 0..2048 {
            events.extend(split.push(&line, start));
            events.extend(split.push(b"\n", start));
        }
        // The burst passes; the rest of the 2 MiB is dropped.
        assert_eq!(lines(events).len(), 1024);
        let later = start + Duration::from_secs(1);
        let events = split.push(b"after a second\n", later);
        assert_eq!(
            events,
            vec![
                Event::Dropped(1024 * 1024),
                Event::Line("after a second".into())
            ]
        );
    }
}
