//! Waiting: polling with backoff rather than fixed sleeps, deadlines,
//! cancellation on SIGINT/SIGTERM, and progress lines at a steady pace.
//!
//! A leaf module: it knows nothing of the state, the providers or the
//! command line, so every layer above can wait the same way.

pub mod progress;
pub mod signal;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Delays between polls: growing geometrically from `initial` to `max`, each
/// with up to ±20% jitter so that many waiters do not poll in step.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before poll number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1.5_f64.powi(i32::try_from(attempt.min(30)).unwrap_or(30));
        let base = self.initial.as_secs_f64() * factor;
        let capped = base.min(self.max.as_secs_f64());
        let jitter = 0.8 + fastrand::f64() * 0.4;
        Duration::from_secs_f64(capped * jitter)
    }
}

/// Why a wait ended without its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The deadline passed.
    Deadline,
    /// SIGINT or SIGTERM.
    Cancelled,
}

/// Sleeps for `delay`, or less when the deadline comes first or the step is cancelled.
pub async fn sleep(
    delay: Duration,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<(), WaitEnd> {
    let now = Instant::now();
    if now >= deadline {
        return Err(WaitEnd::Deadline);
    }
    let until = (now + delay).min(deadline);
    tokio::select! {
        () = tokio::time::sleep_until(until) => {
            if until == deadline && delay > deadline.saturating_duration_since(now) {
                Err(WaitEnd::Deadline)
            } else {
                Ok(())
            }
        }
        () = cancel.cancelled() => Err(WaitEnd::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let b = Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(15),
        };
        let first = b.delay(0).as_secs_f64();
        assert!((1.6..=2.4).contains(&first), "{first}");
        let late = b.delay(20).as_secs_f64();
        assert!((12.0..=18.0).contains(&late), "{late}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_stops_at_the_deadline_and_on_cancel() {
        let cancel = CancellationToken::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            sleep(Duration::from_secs(1), deadline, &cancel).await,
            Ok(())
        );
        assert_eq!(
            sleep(Duration::from_secs(60), deadline, &cancel).await,
            Err(WaitEnd::Deadline)
        );
        let cancel = CancellationToken::new();
        cancel.cancel();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            sleep(Duration::from_secs(1), deadline, &cancel).await,
            Err(WaitEnd::Cancelled)
        );
    }
}
