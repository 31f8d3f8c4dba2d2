//! Order statistics over a small sample: median, min, max and nearest-rank percentiles.

#[derive(Clone, Debug)]
pub struct Stats {
    /// Never empty, ascending.
    sorted: Vec<f64>,
}

impl Stats {
    /// None for an empty sample.
    pub fn new(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut sorted: Vec<f64> = values.into_iter().collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Self { sorted })
    }

    pub fn min(&self) -> f64 {
        self.sorted[0]
    }

    pub fn max(&self) -> f64 {
        self.sorted[self.sorted.len() - 1]
    }

    /// The middle value, or the mean of the two middle values for an even count.
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        if n % 2 == 1 {
            self.sorted[n / 2]
        } else {
            (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0
        }
    }

    /// Nearest-rank percentile, `p` in 0..=100: the smallest value with at least p% of the
    /// sample at or below it (p99 of 300 values is the 297th smallest).
    pub fn percentile(&self, p: f64) -> f64 {
        let n = self.sorted.len();
        let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
        self.sorted[rank.clamp(1, n) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sample_has_no_stats() {
        assert!(Stats::new(Vec::new()).is_none());
    }

    #[test]
    fn median_min_max() {
        let s = Stats::new([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min(), s.median(), s.max()), (1.0, 2.0, 3.0));
        let s = Stats::new([4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median(), 2.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::new((1..=300).map(f64::from)).unwrap();
        assert_eq!(s.percentile(50.0), 150.0);
        assert_eq!(s.percentile(99.0), 297.0);
        assert_eq!(s.percentile(100.0), 300.0);
        assert_eq!(s.percentile(0.0), 1.0);
        let one = Stats::new([7.0]).unwrap();
        assert_eq!(one.percentile(99.0), 7.0);
    }
}
