//! CrashLoopBackOff: the delay before a failed container is restarted, like the kubelet's.

use std::time::{Duration, Instant};

/// Per-container restart back-off. The first restart is immediate; each further one waits
/// twice as long as the one before (from `base` up to `max`), counted from the exit; a
/// container that ran for `reset` before exiting starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    reset: Duration,
    current: Option<Duration>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, reset: Duration) -> Self {
        Backoff {
            base,
            max,
            reset,
            current: None,
        }
    }

    /// Records that a container which ran for `ran` exited.
    pub fn exited(&mut self, ran: Duration) {
        if ran >= self.reset {
            self.current = None;
        }
    }

    /// When the exited container may be restarted (`finished` = its exit).
    pub fn restart_at(&self, finished: Instant) -> Instant {
        match self.current {
            None => finished,
            Some(d) => finished + d,
        }
    }

    /// The delay in force, for the CrashLoopBackOff message.
    pub fn delay(&self) -> Duration {
        self.current.unwrap_or(Duration::ZERO)
    }

    /// Records a restart: the next one waits longer.
    pub fn restarted(&mut self) {
        self.current = Some(match self.current {
            None => self.base,
            Some(d) => (d * 2).min(self.max),
        });
    }
}

/// `10s`, `1m20s`, `5m0s` like Go's `time.Duration` prints whole seconds.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let frac = format!("{frac:03}");
        format!("{}.{}s", secs % 60, frac.trim_end_matches('0'))
    };
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(
            Duration::from_secs(10),
            Duration::from_secs(40),
            Duration::from_secs(600),
        );
        let t = Instant::now();
        assert_eq!(b.restart_at(t), t);
        b.restarted();
        assert_eq!(b.restart_at(t), t + Duration::from_secs(10));
        b.restarted();
        b.restarted();
        b.restarted();
        assert_eq!(b.delay(), Duration::from_secs(40));
        b.exited(Duration::from_secs(5));
        assert_eq!(b.delay(), Duration::from_secs(40));
        b.exited(Duration::from_secs(600));
        assert_eq!(b.restart_at(t), t);
    }

    #[test]
    fn prints_like_go() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(go_duration(Duration::from_millis(1600)), "1.6s");
    }
}
