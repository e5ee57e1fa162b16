//! Bounds on what one client may do: room and name rules, room sizes, message rates.
//!
//! Everything here is a pure function of its inputs and the time passed in.

use std::time::{Duration, Instant};
use switchboard_proto::Mode;

/// Every bound the signaling core enforces. Defaults are the documented ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Peers and senders per room (each pair of peers is a browser-to-browser connection, so
    /// a mesh beyond about 8 overloads uplinks).
    pub max_participants: usize,
    /// Peers and senders per SFU room (each sends once to the server, so far more fit).
    pub max_sfu_participants: usize,
    /// Receivers per broadcast room.
    pub max_receivers: usize,
    /// Rooms per server, random pairs included.
    pub max_rooms: usize,
    /// Sustained messages per second per connection; 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Messages a connection may send in a burst above the sustained rate.
    pub rate_burst: u32,
    /// How long a participant whose socket closed keeps its place, so it can resume.
    pub resume_grace: Duration,
    /// Whether rooms may be created in SFU mode.
    pub sfu_available: bool,
    /// The mode of a room whose first join names none.
    pub default_mode: Mode,
    /// A peer-to-peer broadcast room (a sender and receivers) with more receivers than this
    /// moves to the SFU, if available; 0 never moves one.
    pub sfu_broadcast_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_participants: 8,
            max_sfu_participants: 50,
            max_receivers: 50,
            max_rooms: 10_000,
            rate_per_sec: 50,
            rate_burst: 200,
            resume_grace: Duration::from_secs(15),
            sfu_available: false,
            default_mode: Mode::P2p,
            sfu_broadcast_threshold: 3,
        }
    }
}

pub const MAX_ROOM_LEN: usize = 64;
pub const MAX_NAME_CHARS: usize = 64;

/// Room names: 1–64 of `A-Z a-z 0-9 - _ .`, so they fit in a URL path unescaped.
pub fn validate_room(room: &str) -> Result<(), &'static str> {
    if room.is_empty() || room.len() > MAX_ROOM_LEN {
        return Err("room name must be 1 to 64 characters");
    }
    if !room
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("room name may only contain letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Display names: 1–64 characters after trimming, no control characters. Returns the trimmed
/// name.
pub fn validate_name(name: &str) -> Result<&str, &'static str> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err("display name must not be empty");
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err("display name must be at most 64 characters");
    }
    if trimmed.chars().any(char::is_control) {
        return Err("display name must not contain control characters");
    }
    Ok(trimmed)
}

/// A token bucket: `burst` messages at once, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            tokens: f64::from(burst.max(1)),
            rate: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token; `false` means the message is over the limit. A rate of 0 never limits.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What [`Admission::check`] decided about one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Admit,
    /// Over the rate: drop it without a word (the client was told recently).
    Drop,
    /// Over the rate: drop it and tell the client (`rate_limited`), at most once a second so
    /// the error replies cannot become a flood of their own.
    DropAndReport,
}

/// One connection's rate limit: a [`RateLimiter`] plus the "tell at most once a second" rule.
/// [`crate::Signaling`] applies it itself, or a driver applies it where messages arrive (see
/// [`crate::Signaling::connect_admitted`]).
#[derive(Debug, Clone)]
pub struct Admission {
    limiter: RateLimiter,
    last_report: Option<Instant>,
}

impl Admission {
    pub fn new(limits: &Limits, now: Instant) -> Self {
        Admission {
            limiter: RateLimiter::new(limits.rate_per_sec, limits.rate_burst, now),
            last_report: None,
        }
    }

    /// Counts one message (decoded or not) against the rate.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.limiter.allow(now) {
            return Verdict::Admit;
        }
        let quiet = self
            .last_report
            .is_none_or(|at| now.saturating_duration_since(at).as_secs() >= 1);
        if quiet {
            self.last_report = Some(now);
            Verdict::DropAndReport
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(validate_room("standup-42_a.b").is_ok());
        assert!(validate_room("").is_err());
        assert!(validate_room(&"a".repeat(65)).is_err());
        assert!(validate_room(&"a".repeat(64)).is_ok());
        assert!(validate_room("a b").is_err());
        assert!(validate_room("a/b").is_err());
        assert!(validate_room("ünï").is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(validate_name("  Ann  "), Ok("Ann"));
        assert_eq!(validate_name("Zoë 🎥"), Ok("Zoë 🎥"));
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\u{7}b").is_err());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        assert!(validate_name(&"é".repeat(65)).is_err());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 5, t0);
        for _ in 0..5 {
            assert!(limiter.allow(t0));
        }
        assert!(!limiter.allow(t0));
        // 100 ms at 10/s refills one token.
        assert!(limiter.allow(t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(t0 + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limiter.allow(later));
        }
        assert!(!limiter.allow(later));
    }

    #[test]
    fn admission_reports_at_most_once_a_second() {
        let limits = Limits {
            rate_per_sec: 1,
            rate_burst: 2,
            ..Limits::default()
        };
        let t0 = Instant::now();
        let mut admission = Admission::new(&limits, t0);
        let verdicts: Vec<_> = (0..5).map(|_| admission.check(t0)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Admit,
                Verdict::Admit,
                Verdict::DropAndReport,
                Verdict::Drop,
                Verdict::Drop
            ]
        );
        // Half a second later: one token back, but no new report yet.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(admission.check(t1), Verdict::Drop);
        let t2 = t0 + Duration::from_millis(1000);
        assert_eq!(admission.check(t2), Verdict::Admit);
        assert_eq!(admission.check(t2), Verdict::DropAndReport);
    }

    #[test]
    fn zero_rate_never_limits() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(0, 1, t0);
        for _ in 0..10_000 {
            assert!(limiter.allow(t0));
        }
    }
}
