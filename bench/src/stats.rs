//! Latency samples and what is reported of them.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Samples {
    sorted: Vec<Duration>,
    /// Wall time of the whole run (for concurrent callers, less than the sum of the samples).
    wall: Duration,
}

impl Samples {
    pub fn new(mut samples: Vec<Duration>, wall: Duration) -> Samples {
        samples.sort();
        Samples {
            sorted: samples,
            wall,
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[index]
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn per_second(&self) -> f64 {
        self.sorted.len() as f64 / self.wall.as_secs_f64()
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of a few timings.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}
