//! A completion queue: posting with the phase tag, in the one order that is
//! safe, and the flow control that keeps it from ever overflowing.

use std::sync::atomic::Ordering;

use super::QueueError;
use crate::mem::{MemError, MemoryMap};
use crate::spec::Cqe;

/// Device-side state of one completion queue. The head lives in the doorbell
/// table (the host owns it); the tail and phase are ours.
#[derive(Debug)]
pub struct CompletionQueue {
    pub qid: u16,
    pub iova: u64,
    /// Number of entries (QSIZE + 1).
    pub size: u32,
    /// Next slot to post into.
    pub tail: u32,
    /// Phase tag of the current pass through the ring; starts at 1.
    pub phase: bool,
    pub vector: u16,
    /// Interrupts enabled (CDW11.IEN of Create I/O CQ).
    pub ien: bool,
    /// Slots promised to commands fetched but not yet completed (deferred
    /// admin commands such as AER hold one for as long as they are pending).
    pub reserved: u32,
    /// Submission queues that post here.
    pub sqs: u32,
    /// Entries posted since the last interrupt decision.
    pub unsignalled: u32,
    /// The last valid head the host published.
    pub head: u32,
    /// An invalid head already reported (so it is reported once).
    pub bad_head: Option<u32>,
}

impl CompletionQueue {
    /// A new, empty CQ; the ring must fit in the 64-bit address space.
    pub fn new(qid: u16, iova: u64, size: u32, vector: u16, ien: bool) -> Result<Self, QueueError> {
        u64::from(size)
            .checked_mul(Cqe::SIZE as u64)
            .and_then(|b| iova.checked_add(b))
            .ok_or(QueueError::Overflow { iova, size })?;
        Ok(CompletionQueue {
            qid,
            iova,
            size,
            tail: 0,
            phase: true,
            vector,
            ien,
            reserved: 0,
            sqs: 0,
            unsignalled: 0,
            head: 0,
            bad_head: None,
        })
    }

    /// Slots that can still be promised, given the host's `head`.
    ///
    /// One slot always stays empty: a full ring (tail + 1 == head) must be
    /// told apart from an empty one (tail == head).
    #[inline]
    pub fn free_slots(&self, head: u32) -> u32 {
        let used = (self.tail + self.size - head % self.size) % self.size;
        (self.size - 1)
            .saturating_sub(used)
            .saturating_sub(self.reserved)
    }

    /// Promises one slot to a command about to run; false when the ring has
    /// none (the SQ stops being fetched until the host frees one).
    #[inline]
    pub fn reserve(&mut self, head: u32) -> bool {
        if self.free_slots(head) == 0 {
            return false;
        }
        self.reserved += 1;
        true
    }

    /// Posts `cqe` into a slot reserved earlier.
    ///
    /// The order is the contract with the host driver, which reads the phase
    /// tag in DW3 and then the rest: DW0-1 first, then DW2-3 (phase last, in
    /// the high half) with Release ordering, so no host can see the new phase
    /// with stale DW0-2. This is the only function that writes a CQE.
    pub fn post(&mut self, mem: &MemoryMap, mut cqe: Cqe, sqhd: u16) -> Result<(), MemError> {
        self.reserved = self.reserved.saturating_sub(1);
        cqe.sqhd = sqhd;
        // Cannot overflow: checked in new().
        let slot = self.iova + u64::from(self.tail) * Cqe::SIZE as u64;
        match mem.atomic_u64s::<2>(slot, true)? {
            Some([lo, hi]) => {
                lo.store(cqe.low(), Ordering::Relaxed);
                // Release: DW0-1 above become visible before the phase tag in
                // DW3 (a host polling the phase then reads DW0-1).
                hi.store(cqe.high(self.phase), Ordering::Release);
            }
            None => {
                // Host mapping not 8-aligned (odd fd offset): plain copies
                // around a release fence keep the same order.
                mem.write(slot, &cqe.low().to_le_bytes())?;
                // Release fence: orders the DW0-1 copy before the DW2-3 copy.
                std::sync::atomic::fence(Ordering::Release);
                mem.write(slot + 8, &cqe.high(self.phase).to_le_bytes())?;
            }
        }
        self.tail += 1;
        if self.tail == self.size {
            self.tail = 0;
            self.phase = !self.phase;
        }
        self.unsignalled += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestMemory;
    use crate::spec::Status;
    use std::os::fd::AsRawFd;

    #[test]
    fn flow_control_keeps_one_slot_free() {
        let mut cq = CompletionQueue::new(1, 0, 4, 1, true).unwrap();
        assert_eq!(cq.free_slots(0), 3);
        assert!(cq.reserve(0));
        assert!(cq.reserve(0));
        assert!(cq.reserve(0));
        assert!(!cq.reserve(0), "a 4-entry CQ holds 3 completions");
        cq.tail = 3;
        cq.reserved = 0;
        assert_eq!(cq.free_slots(0), 0);
        assert_eq!(cq.free_slots(2), 2, "host consumed two");
        assert_eq!(cq.free_slots(3), 3);
    }

    #[test]
    fn post_sets_phase_and_wraps() {
        let m = GuestMemory::new();
        let fd = crate::mem::tests::memfd(0x1000);
        m.map(0, 0x1000, fd.as_raw_fd(), 0, true).unwrap();
        let s = m.snapshot();
        let mut cq = CompletionQueue::new(1, 0x100, 2, 0, true).unwrap();
        for round in 0..4u16 {
            assert!(cq.reserve(cq.tail));
            let expect_phase = cq.phase;
            let slot = 0x100 + u64::from(cq.tail) * 16;
            cq.post(&s, Cqe::new(1, round, Status::SUCCESS, 0xaa), round)
                .unwrap();
            let mut b = [0u8; 16];
            s.read(slot, &mut b).unwrap();
            let c = Cqe::from_words(
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u64::from_le_bytes(b[8..].try_into().unwrap()),
            );
            assert_eq!(c.cid, round);
            assert_eq!(c.sqhd, round);
            assert_eq!(c.dw0, 0xaa);
            assert_eq!(c.phase(), expect_phase);
        }
        assert!(cq.phase, "two wraps of a 2-entry ring restore phase 1");
    }
}
