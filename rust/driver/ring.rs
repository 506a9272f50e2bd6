//! How the host side rings a doorbell: by MMIO (a call into the engine, a
//! VM exit in a real guest), through the shadow doorbell buffer with
//! EventIdx (Linux's nvme_dbbuf_update_and_check_event), by a plain store
//! into the shared doorbell page (no exit at all, the worker polls), or by
//! a store plus an ioeventfd write (KVM's ioeventfd: an exit handled in the
//! kernel, no value carried).

use std::os::fd::RawFd;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::engine::Engine;

/// Where an MMIO doorbell write goes: straight into an in-process engine,
/// or a vfio-user REGION_WRITE message to a server (the benchmark client).
pub trait Mmio {
    /// Writes `value` to doorbell `index` (2 * qid for an SQ tail, + 1 for a CQ head).
    fn doorbell(&self, index: u32, value: u32);
}

impl<T: Mmio + ?Sized> Mmio for std::sync::Arc<T> {
    #[inline]
    fn doorbell(&self, index: u32, value: u32) {
        (**self).doorbell(index, value)
    }
}

impl Mmio for Engine {
    #[inline]
    fn doorbell(&self, index: u32, value: u32) {
        self.doorbell_write(index, value)
            .expect("host rang a valid doorbell");
    }
}

/// Linux's `nvme_dbbuf_need_event`: ring MMIO only when the new value
/// passes the EventIdx the device published (u16 arithmetic, like virtio).
#[inline]
pub fn need_event(event_idx: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event_idx).wrapping_sub(1) < new.wrapping_sub(old)
}

/// A doorbell ringing method.
pub enum Ring {
    /// `Engine::doorbell_write`.
    Mmio,
    /// Shadow buffer `db` and EventIdx buffer `ei` (host pointers), then MMIO
    /// when `need_event` says so.
    Shadow {
        db: *mut u8,
        ei: *mut u8,
        stride: usize,
    },
    /// The doorbell page mapped by the host (host pointer).
    Page { page: *mut u8, stride: usize },
    /// The page, then the doorbell's ioeventfd (SQ and CQ fds).
    Ioeventfd {
        page: *mut u8,
        stride: usize,
        sq_fd: RawFd,
        cq_fd: RawFd,
    },
}

/// Rings of one queue pair, with the host's count of MMIO writes.
pub struct Ringer {
    pub ring: Ring,
    /// MMIO doorbell writes this host made.
    pub mmio: u64,
    /// ioeventfd writes this host made.
    pub eventfd_writes: u64,
    /// Called inside a ring, between publishing the value and notifying
    /// (between the shadow store and the EventIdx load; between the page
    /// store and the ioeventfd write): a hostile host's pause lands where
    /// the EventIdx protocol is most fragile. None in the benchmark.
    pub between: Option<Box<dyn FnMut() + Send>>,
    old: [u32; 2],
}

// SAFETY: raw pointers into mappings the owner keeps alive for the Ringer's life.
unsafe impl Send for Ringer {}

#[inline]
fn slot(base: *mut u8, stride: usize, index: u32) -> &'static AtomicU32 {
    // SAFETY: the caller built the Ring from a mapping covering every
    // doorbell index * stride; the pointer is 4-aligned (page-aligned base,
    // stride a multiple of 4). 'static is a lie bounded by the Ringer's owner
    // keeping the mapping alive.
    unsafe { AtomicU32::from_ptr(base.add(index as usize * stride).cast()) }
}

impl Ringer {
    /// A ringer using `ring`.
    pub fn new(ring: Ring) -> Self {
        Ringer {
            ring,
            mmio: 0,
            eventfd_writes: 0,
            between: None,
            old: [0, 0],
        }
    }

    /// Publishes `value` on doorbell `index` (`cq`: the CQ head of the pair).
    #[inline]
    pub fn ring<M: Mmio + ?Sized>(&mut self, e: &M, index: u32, value: u32, cq: bool) {
        let side = usize::from(cq);
        let old = std::mem::replace(&mut self.old[side], value);
        match self.ring {
            Ring::Mmio => {
                e.doorbell(index, value);
                self.mmio += 1;
            }
            Ring::Shadow { db, ei, stride } => {
                slot(db, stride, index).store(value.to_le(), Ordering::Release);
                if let Some(f) = self.between.as_mut() {
                    f();
                }
                // Full barrier between the shadow store and the EventIdx load
                // (Linux: mb()), pairing with the device's fence between its
                // EventIdx store and its doorbell re-read.
                fence(Ordering::SeqCst);
                let event_idx = u32::from_le(slot(ei, stride, index).load(Ordering::Acquire));
                if need_event(event_idx as u16, value as u16, old as u16) {
                    e.doorbell(index, value);
                    self.mmio += 1;
                }
            }
            Ring::Page { page, stride } => {
                // SeqCst: pairs with the worker's sleep flag like an MMIO write.
                slot(page, stride, index).store(value, Ordering::SeqCst);
            }
            Ring::Ioeventfd {
                page,
                stride,
                sq_fd,
                cq_fd,
            } => {
                slot(page, stride, index).store(value, Ordering::SeqCst);
                if let Some(f) = self.between.as_mut() {
                    f();
                }
                let fd = if cq { cq_fd } else { sq_fd };
                let one: u64 = 1;
                // SAFETY: 8-byte write from a valid u64 to the caller's eventfd.
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
                self.eventfd_writes += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_linux() {
        // EventIdx at the old value: the next write rings.
        assert!(need_event(5, 6, 5));
        // A stale EventIdx the host already passed: no ring.
        assert!(!need_event(5, 9, 8));
        // Crossing it rings once.
        assert!(need_event(7, 9, 6));
        // Wrap-around of the u16 arithmetic.
        assert!(need_event(0xffff, 0, 0xffff));
        assert!(!need_event(0xfff0, 3, 2));
    }
}
