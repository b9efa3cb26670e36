//! Exponential backoff with "equal jitter": half the delay fixed, half random, so a fleet that
//! lost the hub (or the broker) together does not come back together.

use std::time::Duration;

pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: 0,
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures += 1;
        let mut r = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
        let frac = u32::from_le_bytes(r) as f64 / u32::MAX as f64;
        base / 2 + base.mul_f64(frac / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let first = b.next_delay();
        assert!(
            first >= Duration::from_millis(500) && first <= Duration::from_secs(1),
            "{first:?}"
        );
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(
            capped >= Duration::from_secs(30) && capped <= Duration::from_secs(60),
            "{capped:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
