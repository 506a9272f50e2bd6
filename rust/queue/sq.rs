//! A submission queue: the device side of the ring.

use super::QueueError;
use crate::spec::Sqe;

/// Device-side state of one submission queue. The tail lives in the
/// doorbell table (the host owns it); the head is ours.
#[derive(Debug)]
pub struct SubmissionQueue {
    pub qid: u16,
    pub iova: u64,
    /// Number of entries (QSIZE + 1).
    pub size: u32,
    /// Next entry to fetch.
    pub head: u32,
    /// The completion queue this SQ posts to.
    pub cqid: u16,
    /// The last valid tail the host published.
    pub tail: u32,
    /// An invalid tail already reported (so it is reported once).
    pub bad_tail: Option<u32>,
    /// Ring slots of queued commands an Abort asked to complete unexecuted
    /// (slots, not CIDs: a CID may be reused once its command completes,
    /// a slot's entry cannot change before it is fetched).
    pub aborts: Vec<u32>,
    /// Commands fetched and still running asynchronously (file I/O): the
    /// SQ is not deleted until they complete.
    pub inflight: u32,
}

impl SubmissionQueue {
    /// A new, empty SQ; the ring must fit in the 64-bit address space.
    pub fn new(qid: u16, iova: u64, size: u32, cqid: u16) -> Result<Self, QueueError> {
        u64::from(size)
            .checked_mul(Sqe::SIZE as u64)
            .and_then(|b| iova.checked_add(b))
            .ok_or(QueueError::Overflow { iova, size })?;
        Ok(SubmissionQueue {
            qid,
            iova,
            size,
            head: 0,
            cqid,
            tail: 0,
            bad_tail: None,
            aborts: Vec::new(),
            inflight: 0,
        })
    }

    /// Guest address of the entry at the head. Cannot overflow: checked in new().
    #[inline]
    pub fn head_iova(&self) -> u64 {
        self.iova + u64::from(self.head) * Sqe::SIZE as u64
    }

    /// Entries the host has submitted that we have not fetched.
    #[inline]
    pub fn available(&self, tail: u32) -> u32 {
        // tail < size is enforced at doorbell-write time; stay total anyway.
        (tail % self.size + self.size - self.head) % self.size
    }

    /// Consumes the head entry.
    #[inline]
    pub fn advance(&mut self) {
        self.head = if self.head + 1 == self.size {
            0
        } else {
            self.head + 1
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_math_wraps() {
        let mut sq = SubmissionQueue::new(1, 0x1000, 4, 1).unwrap();
        assert_eq!(sq.available(0), 0);
        assert_eq!(sq.available(3), 3);
        for _ in 0..3 {
            sq.advance();
        }
        assert_eq!(sq.head, 3);
        assert_eq!(sq.available(1), 2, "tail wrapped past the end");
        sq.advance();
        assert_eq!(sq.head, 0);
        assert_eq!(sq.head_iova(), 0x1000);
        sq.advance();
        assert_eq!(sq.head_iova(), 0x1040);
        assert!(SubmissionQueue::new(1, u64::MAX - 64, 2, 1).is_err());
    }
}
