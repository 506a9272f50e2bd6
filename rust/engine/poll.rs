//! How long an idle I/O worker with [`Polling::Adaptive`](super::Polling)
//! keeps polling before it sleeps: `poll_us` at least, and while work keeps
//! arriving, a few times the recent gap between the end of one piece of
//! work and the arrival of the next (up to [`WINDOW_CAP`]). A host that
//! submits every ~100 us (one command at a time, the guest's own path
//! between a completion and the next submission) then finds the worker
//! still polling instead of asleep until its next doorbell scan; when
//! arrivals stop, or come further apart than the cap, the window falls back
//! to `poll_us` and the worker sleeps as before.

use std::time::Duration;

/// The longest the learned window gets: an idle worker never polls longer
/// than this after its last work (unless `poll_us` asks for more).
pub(super) const WINDOW_CAP: Duration = Duration::from_millis(1);

/// The window is this many times the smoothed gap.
const GAP_FACTOR: u32 = 4;

/// The poll window of one worker.
#[derive(Debug)]
pub(super) struct PollWindow {
    base: Duration,
    /// Smoothed idle gap before recent arrivals (None: no recent traffic).
    gap: Option<Duration>,
}

impl PollWindow {
    /// `base`: `poll_us`, the window with no recent traffic. 0 turns
    /// learning off (the worker sleeps as soon as it is idle).
    pub(super) fn new(base: Duration) -> Self {
        PollWindow { base, gap: None }
    }

    /// Work arrived after the worker was idle for `gap`.
    pub(super) fn arrival(&mut self, gap: Duration) {
        if self.base.is_zero() || gap > WINDOW_CAP {
            // Traffic had stopped (or is too sparse to poll for).
            self.gap = None;
            return;
        }
        // EWMA with weight 1/4 for the new gap: one odd gap neither
        // collapses nor blows up the window.
        self.gap = Some(match self.gap {
            None => gap,
            Some(g) => (g * 3 + gap) / 4,
        });
    }

    /// How long to keep polling after the last work.
    pub(super) fn window(&self) -> Duration {
        let learned = self
            .gap
            .map_or(Duration::ZERO, |g| (g * GAP_FACTOR).min(WINDOW_CAP));
        self.base.max(learned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn learns_the_gap_and_forgets_it_when_traffic_stops() {
        let mut p = PollWindow::new(50 * US);
        assert_eq!(p.window(), 50 * US);
        p.arrival(100 * US);
        assert_eq!(p.window(), 400 * US);
        p.arrival(100 * US);
        assert_eq!(p.window(), 400 * US);
        // One short gap moves it by a quarter only.
        p.arrival(20 * US);
        assert_eq!(p.window(), 320 * US);
        // Never past the cap ...
        p.arrival(900 * US);
        assert!(p.window() <= WINDOW_CAP);
        // ... and a gap past it means traffic stopped: back to poll_us.
        p.arrival(WINDOW_CAP + US);
        assert_eq!(p.window(), 50 * US);
        // Gaps shorter than poll_us keep poll_us.
        p.arrival(5 * US);
        assert_eq!(p.window(), 50 * US);
    }

    #[test]
    fn poll_us_zero_never_polls() {
        let mut p = PollWindow::new(Duration::ZERO);
        p.arrival(100 * US);
        assert_eq!(p.window(), Duration::ZERO);
    }
}
