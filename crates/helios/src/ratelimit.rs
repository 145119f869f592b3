//! Per-connection message rate limit: a token bucket. A message that finds
//! the bucket empty is refused (`RATE_LIMITED`); a connection that keeps
//! going after `strikes` refusals within a minute is closed with 4029.

use std::time::{Duration, Instant};

/// The rate limit of every connection (off by default).
///
/// ```
/// let limit = helios::RateLimit::new(50, 100, 10); // 50 msg/s, bursts of 100
/// # drop(limit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: u32,
    /// Messages that may arrive at once (bucket size).
    pub burst: u32,
    /// Refused messages tolerated per minute before the close (4029).
    pub strikes: u32,
}

impl RateLimit {
    /// `per_second` sustained, `burst` at once, close after `strikes`
    /// refusals in a minute (each at least 1).
    pub fn new(per_second: u32, burst: u32, strikes: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            burst: burst.max(1),
            strikes: strikes.max(1),
        }
    }
}

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Refuse,
    /// Refused, and too often: close the connection.
    Close,
}

/// One connection's bucket.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
    strikes: (Instant, u32),
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
            strikes: (now, 0),
        }
    }

    pub(crate) fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.per_second))
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        let (start, count) = &mut self.strikes;
        if now.saturating_duration_since(*start) > Duration::from_secs(60) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.limit.strikes {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_close() {
        let mut b = TokenBucket::new(RateLimit::new(10, 3, 2));
        let t = Instant::now();
        assert_eq!(b.check_at(t), Verdict::Allow);
        assert_eq!(b.check_at(t), Verdict::Allow);
        assert_eq!(b.check_at(t), Verdict::Allow);
        assert_eq!(b.check_at(t), Verdict::Refuse);
        assert_eq!(b.check_at(t), Verdict::Refuse);
        assert_eq!(b.check_at(t), Verdict::Close);
        // refills at 10/s
        assert_eq!(b.check_at(t + Duration::from_millis(150)), Verdict::Allow);
    }
}
