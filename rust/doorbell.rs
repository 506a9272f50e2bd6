//! Doorbells: the SQ tail and CQ head values the host writes, validated on
//! write, and the wake-up of a sleeping worker.
//!
//! Doorbell `2y` is SQ y's tail, `2y + 1` is CQ y's head (NVMe Base 2.0,
//! 3.1.4.23 and 3.1.4.24; BAR0 offset 1000h + index * (4 << CAP.DSTRD)).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Thread;

/// Why a doorbell write was refused. Each maps to the Asynchronous Event
/// Information of an Error event (NVMe Base 2.0, Figure 150).
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum DoorbellError {
    /// "Write to Invalid Doorbell Register": no such queue.
    #[error("write to doorbell {index}, which belongs to no existing queue")]
    InvalidRegister { index: u32 },
    /// "Invalid Doorbell Write Value": the value is not a slot of the queue.
    #[error("doorbell {index} written with {value}, queue has {size} entries")]
    InvalidValue { index: u32, value: u32, size: u32 },
}

impl DoorbellError {
    /// The Asynchronous Event Information code for the Error event.
    pub fn aer_info(&self) -> u8 {
        match self {
            DoorbellError::InvalidRegister { .. } => 0x00,
            DoorbellError::InvalidValue { .. } => 0x01,
        }
    }
}

/// The doorbell table of one controller.
pub struct Doorbells {
    values: Box<[AtomicU32]>,
    /// Entries of the queue behind each doorbell; 0 means no queue.
    limits: Box<[AtomicU32]>,
    /// Set by a worker about to sleep; a writer that sees it unparks the worker.
    sleeping: AtomicBool,
    worker: Mutex<Option<Thread>>,
    /// Total doorbell writes accepted (cross-thread, hence atomic).
    pub writes: AtomicU64,
    /// Writes refused as invalid.
    pub invalid_writes: AtomicU64,
    /// Wake-ups of a sleeping worker.
    pub wakeups: AtomicU64,
}

impl Doorbells {
    /// A table for queues 0..=max_qid.
    pub fn new(max_qid: u16) -> Self {
        let n = (usize::from(max_qid) + 1) * 2;
        Doorbells {
            values: (0..n).map(|_| AtomicU32::new(0)).collect(),
            limits: (0..n).map(|_| AtomicU32::new(0)).collect(),
            sleeping: AtomicBool::new(false),
            worker: Mutex::new(None),
            writes: AtomicU64::new(0),
            invalid_writes: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        }
    }

    /// Number of doorbells.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are none (never, for a built controller).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The host writes `value` to doorbell `index`.
    ///
    /// Validated as QEMU's nvme_process_db does, quoting the spec: a tail or
    /// head not smaller than the queue size is an Invalid Doorbell Write
    /// Value; a doorbell of a queue that does not exist is a Write to Invalid
    /// Doorbell Register. Neither changes any state.
    #[inline]
    pub fn write(&self, index: u32, value: u32) -> Result<(), DoorbellError> {
        let i = index as usize;
        let Some(limit) = self.limits.get(i) else {
            self.invalid_writes.fetch_add(1, Ordering::Relaxed);
            return Err(DoorbellError::InvalidRegister { index });
        };
        let size = limit.load(Ordering::Acquire);
        if size == 0 {
            self.invalid_writes.fetch_add(1, Ordering::Relaxed);
            return Err(DoorbellError::InvalidRegister { index });
        }
        if value >= size {
            self.invalid_writes.fetch_add(1, Ordering::Relaxed);
            return Err(DoorbellError::InvalidValue { index, value, size });
        }
        // SeqCst pairs with the worker's SeqCst store of `sleeping` and its
        // re-check of the doorbells (Dekker): either the worker sees this
        // value, or this thread sees it sleeping and unparks it.
        self.values[i].store(value, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::Relaxed);
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    /// Unparks the worker.
    pub fn wake(&self) {
        let w = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = w.as_ref() {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
            t.unpark();
        }
    }

    /// Current value of doorbell `index` (Acquire: SQEs the host wrote before
    /// ringing are visible after this load).
    #[inline]
    pub fn value(&self, index: usize) -> u32 {
        self.values[index].load(Ordering::Acquire)
    }

    /// A queue appeared (size > 0) or vanished (size 0): reset its doorbell.
    pub fn set_queue(&self, index: usize, size: u32) {
        self.values[index].store(0, Ordering::Release);
        self.limits[index].store(size, Ordering::Release);
    }

    /// Forget every queue (controller reset).
    pub fn clear(&self) {
        for i in 0..self.values.len() {
            self.set_queue(i, 0);
        }
    }

    /// Registers the thread to unpark.
    pub fn set_worker(&self, t: Option<Thread>) {
        *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The worker announces it is about to sleep. It must re-check for work
    /// after this (see `write`).
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// The worker is awake again.
    pub fn end_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_the_spec() {
        let d = Doorbells::new(2);
        assert_eq!(d.len(), 6);
        assert_eq!(
            d.write(2, 0),
            Err(DoorbellError::InvalidRegister { index: 2 })
        );
        assert_eq!(d.write(99, 0).unwrap_err().aer_info(), 0x00);
        d.set_queue(2, 16);
        d.write(2, 15).unwrap();
        assert_eq!(d.value(2), 15);
        let e = d.write(2, 16).unwrap_err();
        assert_eq!(
            e,
            DoorbellError::InvalidValue {
                index: 2,
                value: 16,
                size: 16
            }
        );
        assert_eq!(e.aer_info(), 0x01);
        assert_eq!(d.value(2), 15, "an invalid write changes nothing");
        d.clear();
        assert!(d.write(2, 1).is_err());
        assert_eq!(d.invalid_writes.load(Ordering::Relaxed), 4);
    }
}
