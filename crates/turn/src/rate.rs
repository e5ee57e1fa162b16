//! Token buckets for the bandwidth limits, per allocation and for the whole server.
//!
//! A bucket holds at most one second of its rate and refills continuously from the time
//! passed in, so the limiter needs no timer of its own and costs a few integer operations
//! per packet.

use std::time::Instant;

/// A byte-rate limiter.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Bytes available now, scaled by 10^9 so refills of a few nanoseconds are not lost.
    tokens: u128,
    last: Instant,
}

const SCALE: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket for `rate` bytes per second.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: u128::from(rate) * SCALE,
            last: now,
        }
    }

    /// Takes `bytes` if available; a packet that does not fit is refused whole.
    pub fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        let capacity = u128::from(self.rate) * SCALE;
        if now > self.last {
            let elapsed = (now - self.last).as_nanos();
            self.tokens = (self.tokens + elapsed * u128::from(self.rate)).min(capacity);
            self.last = now;
        }
        let needed = bytes as u128 * SCALE;
        if needed > self.tokens {
            return false;
        }
        self.tokens -= needed;
        true
    }

    /// Gives back bytes taken for a packet that was then not sent.
    pub fn refund(&mut self, bytes: usize) {
        let capacity = u128::from(self.rate) * SCALE;
        self.tokens = (self.tokens + bytes as u128 * SCALE).min(capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_one_second_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        assert!(bucket.try_take(600, start));
        assert!(bucket.try_take(400, start));
        assert!(!bucket.try_take(1, start));
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(100, later));
        assert!(!bucket.try_take(1, later));
        // Refill never exceeds one second's worth.
        let much_later = later + Duration::from_secs(60);
        assert!(!bucket.try_take(1001, much_later));
        assert!(bucket.try_take(1000, much_later));
        bucket.refund(300);
        assert!(bucket.try_take(300, much_later));
        assert!(!bucket.try_take(1, much_later));
        // Time going backwards takes nothing away.
        assert!(!bucket.try_take(1, start));
    }
}
