//! Pin-based interrupts (INTx): level triggered. The line is asserted
//! while some CQ with interrupts enabled holds entries the host has not
//! consumed and INTMS bit 0 is clear, and deasserted once the host catches
//! up (NVMe Base 2.0, 7.5.1.1.1). Signalled through an eventfd pair as KVM's
//! resampling irqfd expects (trigger: assert; resample: the guest EOI'd and
//! KVM lowered the line, so re-assert if the level is still high) or through
//! a callback that gets every level change.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::irq::eventfd_signal;

/// A level-change callback.
pub type LevelCallback = Arc<dyn Fn(bool) + Send + Sync>;

/// The INTx line.
#[derive(Default)]
pub struct IntxLine {
    trigger: Option<OwnedFd>,
    resample: Option<OwnedFd>,
    callback: Option<LevelCallback>,
    asserted: bool,
    /// Trigger writes and callback assertions.
    pub assertions: u64,
    pub deassertions: u64,
}

impl IntxLine {
    /// Wires the eventfd pair (either may be None).
    pub fn set_eventfds(&mut self, trigger: Option<OwnedFd>, resample: Option<OwnedFd>) {
        self.trigger = trigger;
        self.resample = resample;
    }

    /// Wires the callback.
    pub fn set_callback(&mut self, cb: Option<LevelCallback>) {
        self.callback = cb;
    }

    /// The current level.
    pub fn asserted(&self) -> bool {
        self.asserted
    }

    /// True when a resample fd is attached (the worker must watch it).
    pub fn has_resample(&self) -> bool {
        self.resample.is_some()
    }

    fn trigger(&mut self) {
        if let Some(t) = &self.trigger {
            let _ = eventfd_signal(t);
        }
        self.assertions += 1;
    }

    /// Applies the level computed from the CQs. `fresh`: new entries were
    /// posted since the last call (re-trigger even if already high: a KVM
    /// level irqfd lowered by an EOI we did not see yet must go up again).
    /// Returns a callback to run after the caller drops its locks.
    pub fn update(&mut self, level: bool, fresh: bool) -> Option<(LevelCallback, bool)> {
        let changed = level != self.asserted;
        self.asserted = level;
        if level && (changed || fresh) {
            self.trigger();
        } else if changed {
            self.deassertions += 1;
        }
        if changed {
            return self.callback.clone().map(|c| (c, level));
        }
        None
    }

    /// Reads the resample eventfd; when the guest acknowledged while the
    /// level is still high, asserts again.
    pub fn poll_resample(&mut self) {
        // Only a high line can need asserting again; a resample token left
        // while it was low costs at most one extra trigger later.
        if !self.asserted {
            return;
        }
        let Some(r) = &self.resample else {
            return;
        };
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } == 1 {
            let mut v: u64 = 0;
            // SAFETY: an 8-byte read into a valid u64 from our own
            // (duplicated) fd; poll said it is readable, so it does not block.
            unsafe { libc::read(r.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            self.trigger();
        }
    }

    /// Controller reset: line low (the callback hears it).
    pub fn reset(&mut self) -> Option<(LevelCallback, bool)> {
        self.update(false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::tests::{drain, eventfd};
    use std::sync::atomic::{AtomicI32, Ordering};

    #[test]
    fn level_follows_the_cqs_and_resample_reasserts() {
        let mut l = IntxLine::default();
        let t = eventfd();
        let r = eventfd();
        l.set_eventfds(Some(t.try_clone().unwrap()), Some(r.try_clone().unwrap()));
        let level = Arc::new(AtomicI32::new(-1));
        let lv = level.clone();
        l.set_callback(Some(Arc::new(move |up| {
            lv.store(i32::from(up), Ordering::SeqCst)
        })));
        assert!(l.update(false, false).is_none());
        let (cb, up) = l.update(true, true).unwrap();
        cb(up);
        assert_eq!(level.load(Ordering::SeqCst), 1);
        assert_eq!(drain(&t), 1);
        assert!(l.update(true, false).is_none(), "no new entries, no change");
        assert_eq!(drain(&t), 0);
        l.update(true, true);
        assert_eq!(drain(&t), 1, "new entries re-trigger while high");
        // The guest EOIs with entries still unconsumed: KVM signals resample.
        crate::irq::eventfd_signal(&r).unwrap();
        l.poll_resample();
        assert_eq!(drain(&t), 1, "re-asserted after resample");
        let (cb, up) = l.update(false, false).unwrap();
        cb(up);
        assert_eq!(level.load(Ordering::SeqCst), 0);
        crate::irq::eventfd_signal(&r).unwrap();
        l.poll_resample();
        assert_eq!(drain(&t), 0, "low: resample does nothing");
    }
}
