//! CrashLoopBackOff and ImagePullBackOff delays.
//!
//! The kubelet's `flowcontrol.Backoff` as `doBackOff` uses it: the first
//! failure is retried at once, the second after `base`, each further one
//! after twice the previous delay up to `max`; a container that ran for
//! `reset` or longer before it exited starts over (retried at once). Times are tokio
//! `Instant`s so tests can pause the clock.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Backoff settings (`--backoff-base`, `--backoff-max`, `--backoff-reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub max: Duration,
    pub reset: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    /// The delay the next failure gets.
    next: Duration,
    /// Not before this instant.
    until: Instant,
}

/// Per-key backoff (key: a container name, or `image:<ref>`).
#[derive(Debug, Default)]
pub struct Backoff {
    cfg: BackoffConfig,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff {
            cfg,
            entries: HashMap::new(),
        }
    }

    pub fn config(&self) -> BackoffConfig {
        self.cfg
    }

    /// Records a failure at `at` (a container exit, a failed pull). `ran`
    /// is how long the container ran; a run of `reset` or more starts the
    /// backoff over. Returns the delay now in force.
    pub fn failed(&mut self, key: &str, at: Instant, ran: Option<Duration>) -> Duration {
        let (delay, next) = match self.entries.get(key) {
            Some(e) if ran.is_none_or(|r| r < self.cfg.reset) => {
                (e.next, e.next.saturating_mul(2).min(self.cfg.max))
            }
            _ => (Duration::ZERO, self.cfg.base.min(self.cfg.max)),
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                next,
                until: at + delay,
            },
        );
        delay
    }

    /// How long until `key` may be retried (`None`: now).
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        (e.until > now).then(|| e.until - now)
    }

    /// The delay currently in force for `key`.
    pub fn delay(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.delay)
    }

    /// Forgets a key (the image got pulled, the container got removed).
    pub fn clear(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Has a failure been recorded and not cleared.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_immediate_then_doubles_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(b.failed("c", t, Some(s(1))), s(0));
        assert_eq!(b.remaining("c", t), None);
        assert_eq!(b.failed("c", t, Some(s(1))), s(10));
        assert_eq!(b.remaining("c", t), Some(s(10)));
        assert_eq!(b.remaining("c", t + s(10)), None);
        let delays: Vec<_> = (0..7)
            .map(|_| b.failed("c", t, Some(s(1))).as_secs())
            .collect();
        assert_eq!(delays, [20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.failed("c", t, Some(s(600))), s(0));
        assert_eq!(b.failed("c", t, Some(s(1))), s(10));
        b.clear("c");
        assert_eq!(b.remaining("c", t), None);
    }
}
