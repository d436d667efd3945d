//! A lock-free log-linear latency histogram (microseconds, ~1.6 % relative precision).
//!
//! Values below 128 are exact; above, every power of two is split into 64 buckets. Recording is
//! one relaxed `fetch_add`, so every client task can record into one shared histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

/// A point-in-time copy of a histogram, used to compute percentiles.
pub struct Snapshot {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        v as usize
    } else {
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
        let shift = exp - SUB_BITS;
        let sub = (v >> shift) & (SUB - 1);
        ((exp - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
    }
}

/// The middle of bucket `idx` (its exact value below 128).
fn value_of(idx: usize) -> u64 {
    let idx = idx as u64;
    if idx < 2 * SUB {
        idx
    } else {
        let block = idx / SUB;
        let sub = idx % SUB;
        let shift = block - 1;
        ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Copies the counts and resets the histogram to empty.
    pub fn take(&self) -> Snapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.swap(0, Relaxed)).collect();
        let count = buckets.iter().sum();
        Snapshot {
            buckets,
            count,
            max: self.max.swap(0, Relaxed),
        }
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// `{"p50": .., "p99": .., "p999": .., "max": ..}` in milliseconds (3 decimals).
    pub fn summary_ms(&self) -> serde_json::Value {
        let ms = |us: u64| us as f64 / 1000.0;
        serde_json::json!({
            "count": self.count(),
            "p50_ms": ms(self.quantile(0.50)),
            "p99_ms": ms(self.quantile(0.99)),
            "p999_ms": ms(self.quantile(0.999)),
            "max_ms": ms(self.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_monotonic_and_value_inside_bucket() {
        let mut last = 0;
        for v in (0..1_000_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i >= last, "index not monotonic at {v}");
            assert!(i < BUCKETS);
            last = i;
        }
        for v in [0u64, 5, 127, 128, 129, 1000, 50_000, 1 << 40] {
            let mid = value_of(index(v));
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err < 0.02, "{v} -> {mid}");
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let s = h.take();
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile(0.5);
        assert!((490..=510).contains(&p50), "{p50}");
        assert_eq!(s.max(), 1000);
        assert!(s.quantile(1.0) <= 1000);
        assert_eq!(h.take().count(), 0);
    }
}
