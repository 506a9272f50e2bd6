//! Interrupt Coalescing (Set Features 08h) and the per-vector Coalescing
//! Disable bit (Interrupt Vector Configuration, 09h), for real: a vector
//! fires when THR + 1 completions have accumulated or TIME x 100 us have
//! passed since the first of them, whichever comes first (NVMe Base 2.0,
//! 5.27.1.8). QEMU accepts this feature and ignores it; SPDK lacks it.
//!
//! Owned by the worker (under the queue lock): posting decides, and the
//! worker's loop fires the vectors whose time ran out.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct Aggregate {
    count: u32,
    deadline: Option<Instant>,
}

/// Coalescing state of every vector.
#[derive(Debug)]
pub struct Coalescing {
    /// Aggregation Threshold, 0's based.
    thr: u8,
    /// Aggregation Time, in 100 us units.
    time: u8,
    disabled: Vec<bool>,
    agg: Vec<Aggregate>,
    armed: u32,
    /// Interrupts held back (posted without an immediate signal).
    pub deferred: u64,
    /// Interrupts sent because the time ran out.
    pub expired: u64,
}

impl Coalescing {
    /// Coalescing off (the reset value: THR 0, TIME 0) for `vectors` vectors.
    pub fn new(vectors: u16) -> Self {
        Coalescing {
            thr: 0,
            time: 0,
            disabled: vec![false; usize::from(vectors)],
            agg: vec![Aggregate::default(); usize::from(vectors)],
            armed: 0,
            deferred: 0,
            expired: 0,
        }
    }

    /// Feature 08h: THR (bits 7:0) and TIME (bits 15:8). Aggregates in
    /// progress fire at the next expiry check, so nothing waits on an old
    /// setting.
    pub fn set(&mut self, thr: u8, time: u8) {
        self.thr = thr;
        self.time = time;
        let now = Instant::now();
        for a in self.agg.iter_mut().filter(|a| a.deadline.is_some()) {
            a.deadline = Some(now);
        }
    }

    /// (THR, TIME).
    pub fn get(&self) -> (u8, u8) {
        (self.thr, self.time)
    }

    /// Feature 09h CD bit for `vector` (out of range ignored: the admin
    /// layer validated it).
    pub fn set_disabled(&mut self, vector: u16, cd: bool) {
        if let Some(d) = self.disabled.get_mut(usize::from(vector)) {
            *d = cd;
        }
    }

    /// True when completions on `vector` may be held back. The admin
    /// vector (0) never is; THR 0 means one entry per interrupt, and TIME 0
    /// "corresponds to no delay": either turns coalescing off.
    pub fn applies(&self, vector: u16) -> bool {
        vector != 0
            && self.thr != 0
            && self.time != 0
            && !self
                .disabled
                .get(usize::from(vector))
                .copied()
                .unwrap_or(true)
    }

    /// `n` completions were posted on CQs of `vector`: true to signal now.
    pub fn on_post(&mut self, vector: u16, n: u32) -> bool {
        if !self.applies(vector) {
            // Signalling now also sends what was held (coalescing was
            // turned off meanwhile): the held deadline must not send it again.
            if let Some(a) = self.agg.get_mut(usize::from(vector)) {
                a.count = 0;
                if a.deadline.take().is_some() {
                    self.armed -= 1;
                }
            }
            return true;
        }
        let thr = u32::from(self.thr) + 1;
        let time = Duration::from_micros(100 * u64::from(self.time));
        let a = &mut self.agg[usize::from(vector)];
        a.count = a.count.saturating_add(n);
        if a.count >= thr {
            if a.deadline.take().is_some() {
                self.armed -= 1;
            }
            a.count = 0;
            return true;
        }
        if a.deadline.is_none() {
            a.deadline = Some(Instant::now() + time);
            self.armed += 1;
        }
        self.deferred += 1;
        false
    }

    /// Pushes every vector whose time ran out onto `out`.
    pub fn expire(&mut self, out: &mut Vec<u16>) {
        if self.armed == 0 {
            return;
        }
        let now = Instant::now();
        for (i, a) in self.agg.iter_mut().enumerate() {
            if a.deadline.is_some_and(|d| d <= now) {
                a.deadline = None;
                a.count = 0;
                self.armed -= 1;
                self.expired += 1;
                out.push(i as u16);
            }
        }
    }

    /// The earliest deadline, for a worker about to sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.armed == 0 {
            return None;
        }
        self.agg.iter().filter_map(|a| a.deadline).min()
    }

    /// Controller reset: nothing held, settings back to their reset values.
    pub fn reset(&mut self) {
        let n = self.agg.len() as u16;
        *self = Coalescing::new(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_or_time_whichever_first() {
        let mut c = Coalescing::new(4);
        assert!(c.on_post(1, 1), "off by default");
        c.set(7, 10); // 8 entries or 1 ms
        assert!(!c.applies(0), "never the admin vector");
        assert!(c.on_post(0, 1));
        for _ in 0..7 {
            assert!(!c.on_post(1, 1));
        }
        assert!(c.on_post(1, 1), "the 8th entry fires");
        assert!(!c.on_post(1, 3));
        let mut out = Vec::new();
        c.expire(&mut out);
        assert!(out.is_empty(), "not yet");
        assert!(c.next_deadline().is_some());
        std::thread::sleep(Duration::from_millis(2));
        c.expire(&mut out);
        assert_eq!(out, vec![1], "the time ran out");
        assert!(c.next_deadline().is_none());
        c.set_disabled(2, true);
        assert!(c.on_post(2, 1), "CD set: never held");
        c.set(7, 0);
        assert!(c.on_post(3, 1), "TIME 0 means no delay");
        c.set(0, 10);
        assert!(c.on_post(3, 1), "THR 0 means one entry per interrupt");
    }

    #[test]
    fn changing_the_setting_releases_held_interrupts() {
        let mut c = Coalescing::new(2);
        c.set(200, 255);
        assert!(!c.on_post(1, 1));
        c.set(0, 0);
        let mut out = Vec::new();
        c.expire(&mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn a_vector_whose_cd_bit_was_set_while_held_signals_once() {
        let mut c = Coalescing::new(2);
        c.set(7, 255);
        assert!(!c.on_post(1, 1), "held");
        c.set_disabled(1, true);
        assert!(
            c.on_post(1, 1),
            "CD set: signals now, the held entry with it"
        );
        let mut out = Vec::new();
        std::thread::sleep(Duration::from_millis(30));
        c.expire(&mut out);
        assert!(out.is_empty(), "the held deadline fired a second interrupt");
        assert!(c.next_deadline().is_none());
    }
}
