//! Submission and completion queue rings: index math, phase tags, posting
//! order and flow control. Queue state is owned by the worker that serves it.

pub mod cq;
pub mod sq;

pub use cq::CompletionQueue;
pub use sq::SubmissionQueue;

/// Errors of queue creation and use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The queue ID is outside what the controller was built for.
    #[error("queue ID {qid} is out of range (highest allowed is {max})")]
    QidOutOfRange { qid: u16, max: u16 },
    /// A queue with this ID exists already.
    #[error("queue {qid} already exists; delete it first")]
    Exists { qid: u16 },
    /// No queue with this ID exists.
    #[error("queue {qid} does not exist")]
    Missing { qid: u16 },
    /// The size is outside 2..=max.
    #[error("queue size {size} is invalid (2..={max} entries)")]
    BadSize { size: u32, max: u32 },
    /// The ring would wrap past the end of the 64-bit address space.
    #[error("queue at {iova:#x} with {size} entries overflows the address space")]
    Overflow { iova: u64, size: u32 },
    /// The vector is not one the controller has.
    #[error("interrupt vector {vector} is out of range (controller has {count})")]
    BadVector { vector: u16, count: u16 },
    /// The CQ still has submission queues attached.
    #[error("completion queue {qid} is still used by {sqs} submission queue(s)")]
    InUse { qid: u16, sqs: u32 },
}
