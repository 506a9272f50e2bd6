//! How long an idle I/O worker with [`Polling::Adaptive`](super::Polling)
//! keeps polling before it sleeps: `poll_us` at least, and while work keeps
//! arriving, a few times the recent gap between the end of one piece of
//! work and the arrival of the next, up to a cap. A host that submits every
//! ~100 us (one command at a time, the guest's own path between a
//! completion and the next submission) then finds the worker still polling;
//! when arrivals stop, or come further apart than the cap, the window falls
//! back to `poll_us` and the worker sleeps as before.
//!
//! The cap depends on what a sleeping worker costs the next command. With
//! doorbells nothing wakes (a mapped doorbell page, found by the next scan,
//! up to 16 scan intervals later) it is [`SCANNED_CAP`]. With doorbells that
//! wake the worker (a register write, a trapped vfio-user message, an
//! ioeventfd) a wake-up is cheap, and polling longer only takes a core from
//! the host: on a 2-core machine running a TCG guest, the guest's own vCPU
//! (QD 4: 0.91x QEMU's NVMe with a 1 ms cap, about 1.0-1.1x with 200-400 us).
//! That cap is [`WAKING_CAP`].
//!
//! How the worker polls: it spins while its core is its own, and naps
//! ([`NAP`]) between looks while the core is contended ([`Contention`]).
//! A spinning poller on a machine with more busy threads than cores takes
//! the core of the thread that produces its work: a TCG guest's vCPU at QD 4
//! got 66 % of a core beside a spinning worker and 85 % beside QEMU's own
//! NVMe, and the guest's IOPS followed. A worker that notices it is being
//! preempted naps instead; one that is not (the host waits for it, QD 1)
//! keeps spinning, where a nap would add its length to every command.

use std::time::{Duration, Instant};

/// The longest learned window when a sleeping worker is found only by a
/// doorbell scan (unless `poll_us` asks for more).
pub(super) const SCANNED_CAP: Duration = Duration::from_millis(1);

/// The longest learned window when a doorbell wakes a sleeping worker.
pub(super) const WAKING_CAP: Duration = Duration::from_micros(400);

/// The window is this many times the smoothed gap.
const GAP_FACTOR: u32 = 4;

/// The poll window of one worker.
#[derive(Debug)]
pub(super) struct PollWindow {
    base: Duration,
    /// The longest the learned window gets (see the module documentation).
    cap: Duration,
    /// Smoothed idle gap before recent arrivals (None: no recent traffic).
    gap: Option<Duration>,
}

impl PollWindow {
    /// `base`: `poll_us`, the window with no recent traffic. 0 turns
    /// learning off (the worker sleeps as soon as it is idle).
    pub(super) fn new(base: Duration) -> Self {
        PollWindow {
            base,
            cap: WAKING_CAP,
            gap: None,
        }
    }

    /// Whether a sleeping worker is found only by a doorbell scan.
    #[inline]
    pub(super) fn set_scanned(&mut self, scanned: bool) {
        self.cap = if scanned { SCANNED_CAP } else { WAKING_CAP };
    }

    /// Work arrived after the worker was idle for `gap`.
    pub(super) fn arrival(&mut self, gap: Duration) {
        if self.base.is_zero() || gap > self.cap {
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
            .map_or(Duration::ZERO, |g| (g * GAP_FACTOR).min(self.cap));
        self.base.max(learned)
    }
}

/// How long a polling worker sleeps between looks at its queues while its
/// core is contended (timer slack is 1 us on I/O workers).
pub(super) const NAP: Duration = Duration::from_micros(30);

/// A polling worker that got less than this share of a core (percent) over
/// a [`SAMPLE`] of spinning is being preempted by other threads.
const FAIR_SHARE_PCT: u64 = 85;

/// The shortest stretch of spinning judged: shorter ones say little.
const SAMPLE: Duration = Duration::from_micros(50);

/// Once contended, a worker naps for at least this long.
const HOLD: Duration = Duration::from_millis(20);

/// Whether a polling worker's core is contended: the worker's own CPU time
/// against the wall clock over stretches of pure spinning.
#[derive(Debug, Default)]
pub(super) struct Contention {
    /// (CPU ns, wall time) when the current stretch of spinning began.
    mark: Option<(u64, Instant)>,
    /// Naps until then.
    until: Option<Instant>,
}

impl Contention {
    /// The worker did something other than spin (work, a sleep): the next
    /// stretch starts afresh.
    #[inline]
    pub(super) fn reset(&mut self) {
        self.mark = None;
    }

    /// A look while spinning, at wall time `now` with `cpu_ns` of thread
    /// CPU time used: a stretch of at least [`SAMPLE`] with less than the
    /// fair share starts [`HOLD`] of napping.
    pub(super) fn sample(&mut self, cpu_ns: u64, now: Instant) {
        match self.mark {
            None => self.mark = Some((cpu_ns, now)),
            Some((c0, t0)) => {
                let wall = now.saturating_duration_since(t0);
                if wall >= SAMPLE {
                    let cpu = cpu_ns.saturating_sub(c0);
                    if u128::from(cpu) * 100 < wall.as_nanos() * u128::from(FAIR_SHARE_PCT) {
                        self.until = Some(now + HOLD);
                    }
                    self.mark = Some((cpu_ns, now));
                }
            }
        }
    }

    /// True while the worker should nap between looks rather than spin.
    #[inline]
    pub(super) fn napping(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }
}

/// CPU time this thread has used, in nanoseconds (0 if unreadable).
pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Asks for 1 us timer slack on this thread, so a [`NAP`] is about 30 us
/// and not the default 50 us of slack on top.
pub(super) fn tight_timer_slack() {
    // SAFETY: prctl on the calling thread, integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn learns_the_gap_and_forgets_it_when_traffic_stops() {
        let mut p = PollWindow::new(50 * US);
        p.set_scanned(true);
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
        assert!(p.window() <= SCANNED_CAP);
        // ... and a gap past it means traffic stopped: back to poll_us.
        p.arrival(SCANNED_CAP + US);
        assert_eq!(p.window(), 50 * US);
        // Gaps shorter than poll_us keep poll_us.
        p.arrival(5 * US);
        assert_eq!(p.window(), 50 * US);
    }

    #[test]
    fn a_waking_doorbell_caps_the_window_lower() {
        let mut p = PollWindow::new(50 * US);
        p.arrival(300 * US);
        assert_eq!(p.window(), WAKING_CAP, "4 x 300 us, capped");
        p.arrival(WAKING_CAP + US);
        assert_eq!(p.window(), 50 * US, "a gap past the cap: traffic stopped");
        p.set_scanned(true);
        p.arrival(300 * US);
        assert_eq!(
            p.window(),
            SCANNED_CAP,
            "scanned: 4 x 300 us, capped at 1 ms"
        );
    }

    #[test]
    fn contention_is_a_share_of_a_core_below_fair_over_a_sample() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Contention::default();
        let mut look = |cpu: u64, at: Instant| {
            c.sample(cpu, at);
            c.napping(at)
        };
        assert!(!look(0, t0), "a first look only marks");
        // 40 us of 40 us: too short to judge; 100 us of 100 us: its own core.
        assert!(!look(40_000, t0 + 40 * US));
        assert!(!look(100_000, t0 + 100 * US));
        // The next 100 us: 60 us of CPU, preempted 40 % of the time.
        assert!(look(160_000, t0 + 200 * US), "contended");
        assert!(look(260_000, t0 + 300 * US), "held after a fair sample");
        assert!(
            !look(20_300_000, t0 + HOLD + 300 * US),
            "released after HOLD"
        );
        // A sleep between looks is not preemption.
        c.reset();
        c.sample(20_300_000, t0 + 30 * ms);
        c.sample(20_400_000, t0 + 30 * ms + 100 * US);
        assert!(!c.napping(t0 + 30 * ms + 100 * US));
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let a = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > a);
    }

    #[test]
    fn poll_us_zero_never_polls() {
        let mut p = PollWindow::new(Duration::ZERO);
        p.arrival(100 * US);
        assert_eq!(p.window(), Duration::ZERO);
    }
}
