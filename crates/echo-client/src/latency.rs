//! A latency histogram for the load generator: fixed memory, constant-time recording, and
//! percentiles within about 3 %, however many messages a run times.
//!
//! Keeping every sample and sorting it would be exact, but a fast server answers a million
//! messages in a few seconds. Instead each power of two is split into 16 equal buckets (the
//! idea of HdrHistogram, kept to a few lines): 20–21 µs is one bucket, 40–42 µs another,
//! so a bucket is never wider than 1/16 of the values in it.

use std::time::Duration;

/// Sub-buckets per power of two, as a bit count: 2⁴ = 16 gives ±3 % around each bucket's middle.
const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Enough buckets for any `u64` of nanoseconds.
const BUCKETS: usize = (64 - SUB_BUCKET_BITS as usize + 1) * SUB_BUCKETS;

/// How many messages took how long.
#[derive(Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("total", &self.total)
            .field("p50", &self.percentile(50.0))
            .field("p99", &self.percentile(99.0))
            .finish()
    }
}

impl LatencyHistogram {
    /// Counts one message that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
    }

    /// How many messages were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency that `percent` % of the messages did not exceed (the middle of its bucket),
    /// or `None` if nothing was recorded.
    pub fn percentile(&self, percent: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // The rank of the message we want, counting from 1: p50 of 4 messages is the 2nd.
        let rank = ((percent / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bounds_of(bucket);
                return Some(Duration::from_nanos(low + width / 2));
            }
        }
        unreachable!("the counts add up to total")
    }
}

/// The bucket for a value: below 16 ns one bucket per nanosecond; above, the top 5 bits of the
/// value (its power of two and the next 4 bits) pick the bucket.
fn bucket_of(nanos: u64) -> usize {
    let top_bit = 63 - nanos.max(1).leading_zeros();
    if top_bit < SUB_BUCKET_BITS {
        return nanos as usize;
    }
    let shift = top_bit - SUB_BUCKET_BITS;
    let sub_bucket = (nanos >> shift) as usize & (SUB_BUCKETS - 1);
    (shift as usize + 1) * SUB_BUCKETS + sub_bucket
}

/// The lowest value of a bucket and its width, the inverse of [`bucket_of`].
fn bounds_of(bucket: usize) -> (u64, u64) {
    if bucket < SUB_BUCKETS {
        return (bucket as u64, 1);
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let sub_bucket = (bucket % SUB_BUCKETS) as u64;
    ((SUB_BUCKETS as u64 + sub_bucket) << shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value falls inside the bounds of its own bucket, small and large.
    #[test]
    fn buckets_hold_their_values() {
        for nanos in (0..5_000).chain([65_535, 1 << 40, u64::MAX]) {
            let (low, width) = bounds_of(bucket_of(nanos));
            assert!(
                low <= nanos && nanos - low < width,
                "{nanos} not in {low}+{width}"
            );
        }
    }

    /// Percentiles land within the promised ~3 % of the true value.
    #[test]
    fn percentiles_are_within_three_percent() {
        let mut histogram = LatencyHistogram::default();
        for micros in 1..=1000 {
            histogram.record(Duration::from_micros(micros));
        }
        for (percent, exact) in [(50.0, 500.0), (99.0, 990.0), (100.0, 1000.0)] {
            let micros = histogram.percentile(percent).unwrap().as_secs_f64() * 1e6;
            assert!(
                (micros / exact - 1.0).abs() < 0.035,
                "p{percent} = {micros}"
            );
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(LatencyHistogram::default().percentile(50.0), None);
    }
}
