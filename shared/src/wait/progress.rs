//! Progress lines for long waits: one line at a steady pace saying what is
//! awaited, how long it has been, and how long until the deadline.

use std::time::Duration;

use tokio::time::Instant;

/// Emits a progress line at most once per period.
#[derive(Debug)]
pub struct Pace {
    what: String,
    started: Instant,
    deadline: Instant,
    every: Duration,
    last: Instant,
}

impl Pace {
    /// Starts pacing a wait for `what` that must end by `deadline`.
    pub fn new(what: impl Into<String>, deadline: Instant) -> Self {
        let now = Instant::now();
        Self {
            what: what.into(),
            started: now,
            deadline,
            every: Duration::from_secs(10),
            last: now,
        }
    }

    /// Time since the wait began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Logs a progress line when one is due.
    pub fn tick(&mut self, status: &str) {
        let now = Instant::now();
        if now.duration_since(self.last) >= self.every {
            self.last = now;
            tracing::info!(
                "waiting for {}: {status}, {} elapsed, deadline in {}",
                self.what,
                short(now.duration_since(self.started)),
                short(self.deadline.saturating_duration_since(now)),
            );
        }
    }
}

/// A duration rounded to what a person reads: `850ms`, `12s`, `4m05s`.
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.as_millis())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(short(Duration::from_millis(850)), "850ms");
        assert_eq!(short(Duration::from_secs(12)), "12s");
        assert_eq!(short(Duration::from_secs(245)), "4m05s");
        assert_eq!(short(Duration::from_secs(3900)), "1h05m");
    }
}
