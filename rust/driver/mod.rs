//! The driver side, in Rust: what a host NVMe driver does with the rings.
//!
//! Like virtio-queue's `mock.rs`, one reusable model of the *other* end,
//! used by the cargo tests, the benchmark (`bench_io`) and fuzz targets, so
//! each of them exercises the device exactly as a driver would: SQEs written
//! into guest memory, doorbells rung, CQEs consumed by phase tag.

pub mod bench;
pub mod bench_zoned;
pub mod doorbell_fuzz;
pub mod exactly_once;
#[cfg(test)]
mod exactly_once_tests;
pub mod file_floor;
pub mod floor;
pub mod irqcost;
pub mod ring;
pub mod vfio_user;
pub mod zone_append;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{Engine, EngineError};
use crate::shm::SharedMemory;
use crate::spec::{Cqe, Sqe};

/// xorshift64*: cheap, deterministic, good enough to scatter LBAs and
/// pauses (the benchmark, the exactly-once harness, the fuzz targets).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator from any `seed` (0 included).
    pub fn seeded(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Guest memory as the host side sees it: a shared memfd mapping.
pub struct HostMemory {
    shm: SharedMemory,
    /// IOVA of byte 0.
    pub iova: u64,
}

impl HostMemory {
    /// A new zeroed memfd of `len` bytes, to be placed at `iova`.
    pub fn new(len: usize, iova: u64) -> std::io::Result<Self> {
        Ok(HostMemory {
            shm: SharedMemory::new(c"nvmefast-host", len)?,
            iova,
        })
    }

    /// Maps an existing memory fd (duplicated) of `len` bytes placed at `iova`.
    pub fn from_fd(fd: RawFd, len: usize, iova: u64) -> std::io::Result<Self> {
        Self::from_fd_at(fd, 0, len, iova)
    }

    /// As [`HostMemory::from_fd`], mapping `len` bytes from file offset
    /// `offset` (page aligned).
    pub fn from_fd_at(fd: RawFd, offset: usize, len: usize, iova: u64) -> std::io::Result<Self> {
        Ok(HostMemory {
            shm: SharedMemory::from_fd_at(fd, offset, len)?,
            iova,
        })
    }

    /// The memfd, for `Engine::map_dma`.
    pub fn fd(&self) -> RawFd {
        self.shm.fd()
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.shm.len()
    }

    /// True for an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.shm.is_empty()
    }

    /// Host pointer of `[iova, iova+len)`; panics outside the mapping (a bug
    /// in the test or benchmark, never guest input).
    pub fn ptr(&self, iova: u64, len: usize) -> *mut u8 {
        let off = iova.checked_sub(self.iova).expect("iova below host memory") as usize;
        assert!(
            off.checked_add(len).is_some_and(|e| e <= self.shm.len()),
            "iova past host memory"
        );
        // SAFETY: bounds asserted above.
        unsafe { self.shm.as_ptr().add(off) }
    }

    /// Copies `data` to `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) {
        let p = self.ptr(iova, data.len());
        // SAFETY: `p` is valid for data.len() bytes (checked by ptr()).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) }
    }

    /// Copies from `iova` into `out`.
    pub fn read(&self, iova: u64, out: &mut [u8]) {
        let p = self.ptr(iova, out.len());
        // SAFETY: `p` is valid for out.len() bytes (checked by ptr()).
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) }
    }
}

/// The host's half of one SQ/CQ pair.
pub struct HostQueue {
    pub qid: u16,
    pub size: u32,
    pub sq_iova: u64,
    pub cq_iova: u64,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
    sq: *mut u8,
    cq: *mut u8,
    /// How doorbells are rung (MMIO unless changed).
    pub ringer: ring::Ringer,
}

// SAFETY: raw pointers into a HostMemory mapping that the owner keeps alive.
unsafe impl Send for HostQueue {}

impl HostQueue {
    /// The host side of queues at `sq_iova`/`cq_iova` inside `mem`.
    pub fn new(mem: &HostMemory, qid: u16, size: u32, sq_iova: u64, cq_iova: u64) -> Self {
        HostQueue {
            qid,
            size,
            sq_iova,
            cq_iova,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            sq: mem.ptr(sq_iova, size as usize * Sqe::SIZE),
            cq: mem.ptr(cq_iova, size as usize * Cqe::SIZE),
            ringer: ring::Ringer::new(ring::Ring::Mmio),
        }
    }

    /// Writes `sqe` at the tail and advances it (no doorbell yet).
    #[inline]
    pub fn push(&mut self, sqe: &Sqe) {
        let b = sqe.to_bytes();
        // SAFETY: sq_tail < size, inside the ring mapped in new().
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.as_ptr(),
                self.sq.add(self.sq_tail as usize * Sqe::SIZE),
                64,
            )
        };
        self.sq_tail = (self.sq_tail + 1) % self.size;
    }

    /// Overwrites SQ slot `slot` (one the device has consumed) with `sqe`.
    pub fn write_slot(&mut self, slot: u32, sqe: &Sqe) {
        assert!(
            slot < self.size,
            "slot {slot} outside a ring of {}",
            self.size
        );
        let b = sqe.to_bytes();
        // SAFETY: slot < size, inside the ring mapped in new().
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), self.sq.add(slot as usize * Sqe::SIZE), 64)
        };
    }

    /// The SQ tail as the host last wrote it (pushed, rung or not).
    pub fn sq_tail(&self) -> u32 {
        self.sq_tail
    }

    /// Rings the SQ tail doorbell.
    #[inline]
    pub fn ring_sq<M: ring::Mmio + ?Sized>(&mut self, e: &M) {
        let (i, v) = (u32::from(self.qid) * 2, self.sq_tail);
        self.ringer.ring(e, i, v, false);
    }

    /// Rings the CQ head doorbell.
    #[inline]
    pub fn ring_cq<M: ring::Mmio + ?Sized>(&mut self, e: &M) {
        let (i, v) = (u32::from(self.qid) * 2 + 1, self.cq_head);
        self.ringer.ring(e, i, v, true);
    }

    /// Spins (yielding) until a completion arrives or `timeout` passes; the
    /// CQ head doorbell is the caller's to ring.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Option<Cqe> {
        let start = std::time::Instant::now();
        loop {
            if let Some(c) = self.pop() {
                return Some(c);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::yield_now();
        }
    }

    /// Takes the next completion if its phase tag says it is new.
    #[inline]
    pub fn pop(&mut self) -> Option<Cqe> {
        // SAFETY: cq_head < size; the slot is 16-byte aligned (CQ base is page
        // aligned), so the two u64 halves are aligned for atomics.
        let (lo, hi) = unsafe {
            let p = self.cq.add(self.cq_head as usize * Cqe::SIZE) as *mut u64;
            (AtomicU64::from_ptr(p), AtomicU64::from_ptr(p.add(1)))
        };
        // Acquire pairs with the device's Release store of DW2-3: once the
        // phase is seen, DW0-1 are too.
        let h = hi.load(Ordering::Acquire);
        if ((h >> 48) & 1 == 1) != self.phase {
            return None;
        }
        let c = Cqe::from_words(lo.load(Ordering::Relaxed), h);
        self.cq_head += 1;
        if self.cq_head == self.size {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Some(c)
    }
}

/// A host with its own guest memory, creating queues straight through the
/// engine API (standing in for the admin layer, which is Python's).
pub struct MockHost {
    pub mem: HostMemory,
    next: u64,
}

impl MockHost {
    /// Default IOVA of the mock's memory: above 4 GiB, as a guest's often is.
    pub const IOVA: u64 = 0x1_0000_0000;

    /// `bytes` of guest memory mapped into `engine` at [`MockHost::IOVA`].
    pub fn new(engine: &Engine, bytes: usize) -> Result<Self, EngineError> {
        let mem =
            HostMemory::new(bytes, Self::IOVA).map_err(|e| EngineError::Config(e.to_string()))?;
        engine.map_dma(Self::IOVA, bytes as u64, mem.fd(), 0, true)?;
        Ok(MockHost {
            mem,
            next: Self::IOVA,
        })
    }

    /// Bump-allocates `bytes`, 4 KiB aligned.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        let at = self.next;
        self.next += (bytes as u64).div_ceil(4096) * 4096;
        assert!(
            self.next <= self.mem.iova + self.mem.len() as u64,
            "mock host memory exhausted"
        );
        at
    }

    /// Creates CQ and SQ `qid` of `entries` each on `vector`.
    pub fn create_queue_pair(
        &mut self,
        engine: &Engine,
        qid: u16,
        entries: u32,
        vector: u16,
        ien: bool,
    ) -> Result<HostQueue, EngineError> {
        let sq = self.alloc(entries as usize * Sqe::SIZE);
        let cq = self.alloc(entries as usize * Cqe::SIZE);
        engine.create_cq(qid, cq, entries, vector, ien)?;
        engine.create_sq(qid, sq, entries, qid)?;
        Ok(HostQueue::new(&self.mem, qid, entries, sq, cq))
    }
}
