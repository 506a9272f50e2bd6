//! Doorbells: one place holding every SQ tail and CQ head the host wrote.
//!
//! Doorbell `2y` is SQ y's tail, `2y + 1` is CQ y's head, `4 << CAP.DSTRD`
//! bytes apart (NVMe Base 2.0, 3.1.4.23/24; BAR0 1000h onward). The values
//! live in a doorbell page, a memfd an embedder can share with a vfio-user
//! client (a sparse-mmap area of BAR0 at 1000h) so the client writes
//! doorbells with no message at all; MMIO writes land in the same page.
//! After Doorbell Buffer Config the host's shadow doorbell buffer becomes
//! the one source of truth instead (openvmm learned this the hard way: two
//! copies drift when a guest uses shadow doorbells inconsistently), and the
//! device publishes EventIdx in the host's EventIdx buffer. A controller
//! reset returns to the page (the shadow buffers' lifetime ends at reset,
//! NVMe Base 5.8).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;

use crate::mem::{MemError, MemoryMap};
use crate::shm::SharedMemory;

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

/// Why Doorbell Buffer Config was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShadowError {
    /// A buffer address is not memory-page aligned (Invalid Field).
    #[error("shadow doorbell buffer {iova:#x} is not aligned to the {page}-byte memory page")]
    Unaligned { iova: u64, page: u64 },
    /// A buffer is not mapped writable guest memory (Data Transfer Error).
    #[error("shadow doorbell buffer is not usable guest memory: {0}")]
    Memory(#[from] MemError),
}

/// The shadow doorbell and EventIdx buffers, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shadow {
    pub db: u64,
    pub ei: u64,
}

/// Doorbells 0 and 1: the admin SQ tail and CQ head.
const ADMIN_DOORBELLS: usize = 2;

/// BAR0 offset of the first doorbell, and its offset in the page's fd.
pub const PAGE_OFFSET: usize = 0x1000;

/// The doorbell table of one controller.
pub struct Doorbells {
    /// The doorbell page: private device memory in a shareable memfd.
    page: SharedMemory,
    stride: usize,
    count: usize,
    /// Entries of the queue behind each doorbell; 0 means no queue.
    limits: Box<[AtomicU32]>,
    /// The page value of each admin doorbell when last looked at with
    /// shadow buffers in force: a page that differs was written since, by a
    /// client that maps the page (Linux rings the admin queue only there).
    page_seen: [AtomicU32; ADMIN_DOORBELLS],
    /// Shadow buffers (0, 0 = none). Written only under `shadow_lock`.
    shadow_db: AtomicU64,
    shadow_ei: AtomicU64,
    /// MMIO writes hold it shared, Doorbell Buffer Config exclusively: a
    /// write racing the switch either lands before the copy (and is copied)
    /// or after it (in the shadow buffer), never in between and lost.
    shadow_lock: RwLock<()>,
    /// MMIO doorbell writes accepted.
    pub writes: AtomicU64,
    /// Writes refused as invalid (MMIO) or values found invalid (page, shadow).
    pub invalid_writes: AtomicU64,
}

impl Doorbells {
    /// A table for queues 0..=max_qid, `stride` bytes apart (4 << DSTRD).
    pub fn new(max_qid: u16, stride: usize) -> std::io::Result<Self> {
        let count = (usize::from(max_qid) + 1) * 2;
        let len = (count * stride).div_ceil(4096) * 4096;
        // File offsets mirror BAR0: the doorbells start at 1000h in the fd
        // too, so a vfio-user server offers the fd with region offset 0.
        let page = SharedMemory::new_at(c"nvmefast-doorbells", PAGE_OFFSET, len)?;
        Ok(Doorbells {
            page,
            stride,
            count,
            limits: (0..count).map(|_| AtomicU32::new(0)).collect(),
            page_seen: [AtomicU32::new(0), AtomicU32::new(0)],
            shadow_db: AtomicU64::new(0),
            shadow_ei: AtomicU64::new(0),
            shadow_lock: RwLock::new(()),
            writes: AtomicU64::new(0),
            invalid_writes: AtomicU64::new(0),
        })
    }

    /// Number of doorbells.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there are none (never, for a built controller).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The doorbell page's memfd (borrowed), where the doorbells start in
    /// it ([`PAGE_OFFSET`], their BAR0 offset) and their length.
    pub fn page_fd(&self) -> (RawFd, usize, usize) {
        (self.page.fd(), self.page.offset(), self.page.len())
    }

    #[inline]
    fn slot(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < self.count);
        // SAFETY: index < count, so index * stride + 4 <= len; the page is
        // page aligned and stride a multiple of 4, so the u32 is aligned; it
        // lives as long as self.
        unsafe { AtomicU32::from_ptr(self.page.as_ptr().add(index * self.stride).cast()) }
    }

    /// The shadow buffers in force.
    #[inline]
    pub fn shadow(&self) -> Option<Shadow> {
        let db = self.shadow_db.load(Ordering::Acquire);
        if db == 0 {
            return None;
        }
        Some(Shadow {
            db,
            ei: self.shadow_ei.load(Ordering::Acquire),
        })
    }

    /// The 4-byte slot of doorbell `index` in shadow buffer `base`.
    #[inline]
    fn shadow_slot<'m>(
        &self,
        mem: &'m MemoryMap,
        base: u64,
        index: usize,
        write: bool,
    ) -> Option<&'m AtomicU32> {
        let at = base.checked_add((index * self.stride) as u64)?;
        mem.atomic_u32(at, write).ok().flatten()
    }

    /// The host writes `value` to doorbell `index` by MMIO.
    ///
    /// Validated as QEMU's nvme_process_db does, quoting the spec: a tail or
    /// head not smaller than the queue size is an Invalid Doorbell Write
    /// Value; a doorbell of a queue that does not exist is a Write to Invalid
    /// Doorbell Register. Neither changes any state.
    #[inline]
    pub fn write(&self, mem: &MemoryMap, index: u32, value: u32) -> Result<(), DoorbellError> {
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
        let _g = self.shadow_lock.read().unwrap_or_else(|e| e.into_inner());
        // SeqCst: pairs with a worker's SeqCst sleep flag and re-check
        // (see Waker::wake_if_sleeping).
        match self.shadow() {
            None => self.slot(i).store(value, Ordering::SeqCst),
            // The admin queue's register value goes to its shadow slot (as
            // QEMU does): Linux never updates the admin shadow.
            Some(s) if i < ADMIN_DOORBELLS => {
                if let Some(slot) = self.shadow_slot(mem, s.db, i, true) {
                    slot.store(value.to_le(), Ordering::SeqCst);
                }
            }
            // An I/O queue's register write is only a wake-up: the host
            // wrote the value to the shadow buffer first and may have moved
            // it on since (a posted vfio-user write arrives late), so the
            // register's value must never replace the shadow's.
            Some(_) => {}
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The raw value of doorbell `index`, unvalidated (the page or the
    /// shadow buffer may hold anything a client wrote there). Acquire: SQEs
    /// written before the doorbell are visible after this load. None when
    /// the shadow slot is not in readable guest memory (unmapped since, or
    /// remote): the caller keeps the value it had, since any value, 0
    /// included, could be a valid doorbell and replay old commands.
    #[inline]
    pub fn read(&self, mem: &MemoryMap, shadow: Option<Shadow>, index: usize) -> Option<u32> {
        let Some(s) = shadow else {
            return Some(self.slot(index).load(Ordering::Acquire));
        };
        if index < ADMIN_DOORBELLS {
            // Linux rings the admin queue through the register only, even
            // with shadow buffers. An MMIO write lands in the shadow slot
            // (see write()); a write to a mapped page does not, so a page
            // value that changed since we last looked is the newest one and
            // is copied to the shadow slot as an MMIO write would have been.
            // (I/O queues never take the page's value: see write().)
            // Acquire: as below.
            let page = self.slot(index).load(Ordering::Acquire);
            let seen = &self.page_seen[index];
            if page != seen.load(Ordering::Relaxed) {
                // The shadow slot first, then `seen`: a reader in between
                // still finds the page changed and takes its value.
                if let Some(slot) = self.shadow_slot(mem, s.db, index, true) {
                    slot.store(page.to_le(), Ordering::Release);
                }
                seen.store(page, Ordering::Relaxed);
                return Some(page);
            }
        }
        // Little endian in guest memory (QEMU shipped without the
        // conversion once).
        self.shadow_slot(mem, s.db, index, false)
            .map(|slot| u32::from_le(slot.load(Ordering::Acquire)))
    }

    /// Publishes EventIdx for doorbell `index`: the host rings MMIO for a
    /// new value only once it passes this one.
    #[inline]
    pub fn set_event_idx(&self, mem: &MemoryMap, shadow: Shadow, index: usize, value: u32) {
        if let Some(slot) = self.shadow_slot(mem, shadow.ei, index, true) {
            slot.store(value.to_le(), Ordering::Release);
        }
    }

    /// Bytes of a shadow buffer that hold doorbells (every doorbell's slot).
    pub fn span(&self) -> u64 {
        (self.count * self.stride) as u64
    }

    /// Queue size behind doorbell `index` (0: none).
    #[inline]
    pub fn limit(&self, index: usize) -> u32 {
        self.limits[index].load(Ordering::Acquire)
    }

    /// A queue appeared (size > 0) or vanished (size 0): its doorbell starts at 0.
    pub fn set_queue(&self, mem: &MemoryMap, index: usize, size: u32) {
        self.slot(index).store(0, Ordering::Release);
        if let Some(seen) = self.page_seen.get(index) {
            seen.store(0, Ordering::Relaxed);
        }
        if let Some(s) = self.shadow() {
            if let Some(slot) = self.shadow_slot(mem, s.db, index, true) {
                slot.store(0, Ordering::Release);
            }
            self.set_event_idx(mem, s, index, 0);
        }
        self.limits[index].store(size, Ordering::Release);
    }

    /// Doorbell Buffer Config: from now on doorbells live in `db` and the
    /// device publishes EventIdx in `ei` (both one memory page of `page`
    /// bytes). The current values are copied over so nothing is lost, and
    /// EventIdx starts at them so the host's next write rings.
    pub fn set_shadow(
        &self,
        mem: &MemoryMap,
        db: u64,
        ei: u64,
        page: u64,
    ) -> Result<(), ShadowError> {
        for iova in [db, ei] {
            if iova == 0 || iova % page != 0 {
                return Err(ShadowError::Unaligned { iova, page });
            }
        }
        // The host sizes the buffers for its own queues (Linux: its queue
        // count times 8 times the stride), so only the slots of queues that
        // exist are touched; later queues are set up by set_queue. Check
        // every slot that will be written first (doorbell 0's at least, so
        // an unmapped buffer is refused before any queue exists).
        let live: Vec<usize> = (0..self.count)
            .filter(|&i| i == 0 || self.limits[i].load(Ordering::Acquire) != 0)
            .collect();
        for base in [db, ei] {
            for &i in &live {
                let at = base
                    .checked_add((i * self.stride) as u64)
                    .ok_or(MemError::Overflow { iova: base, len: 4 })?;
                mem.translate(at, 4, true)?;
            }
        }
        let _g = self.shadow_lock.write().unwrap_or_else(|e| e.into_inner());
        let old = self.shadow();
        let s = Shadow { db, ei };
        for (i, seen) in self.page_seen.iter().enumerate() {
            // The page as it is now is not a new write.
            seen.store(self.slot(i).load(Ordering::Acquire), Ordering::Relaxed);
        }
        for &i in &live {
            let v = self.read(mem, old, i).unwrap_or(0);
            if let Some(slot) = self.shadow_slot(mem, db, i, true) {
                slot.store(v.to_le(), Ordering::Relaxed);
            }
            self.set_event_idx(mem, s, i, v);
        }
        if mem.lost() {
            // The buffers' memory shrank under the copy above: refused as
            // a buffer outside guest memory is.
            return Err(ShadowError::Memory(MemError::Lost { iova: db, len: 4 }));
        }
        self.shadow_ei.store(ei, Ordering::Release);
        // Release: the copied values are visible before anyone reads the
        // shadow through this address.
        self.shadow_db.store(db, Ordering::Release);
        Ok(())
    }

    /// Forget every queue and the shadow buffers (controller reset).
    pub fn clear(&self) {
        let _g = self.shadow_lock.write().unwrap_or_else(|e| e.into_inner());
        self.shadow_db.store(0, Ordering::Release);
        self.shadow_ei.store(0, Ordering::Release);
        for i in 0..self.count {
            self.limits[i].store(0, Ordering::Release);
            self.slot(i).store(0, Ordering::Release);
        }
        for seen in &self.page_seen {
            seen.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::GuestMemory;

    #[test]
    fn a_client_cannot_shrink_the_doorbell_page() {
        // The page's fd goes to vfio-user clients (sparse mmap): truncated,
        // every doorbell read by a worker would raise SIGBUS.
        let d = Doorbells::new(2, 4).unwrap();
        let (fd, offset, len) = d.page_fd();
        for size in [0, offset as i64, (offset + len) as i64 + 4096] {
            // SAFETY: ftruncate on the page's fd, which d keeps open.
            assert_eq!(unsafe { libc::ftruncate(fd, size) }, -1, "size {size}");
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
        }
    }

    #[test]
    fn validation_follows_the_spec() {
        let m = GuestMemory::new();
        let s = m.snapshot();
        let d = Doorbells::new(2, 4).unwrap();
        assert_eq!(d.len(), 6);
        assert_eq!(
            d.write(&s, 2, 0),
            Err(DoorbellError::InvalidRegister { index: 2 })
        );
        assert_eq!(d.write(&s, 99, 0).unwrap_err().aer_info(), 0x00);
        d.set_queue(&s, 2, 16);
        d.write(&s, 2, 15).unwrap();
        assert_eq!(d.read(&s, None, 2), Some(15));
        let e = d.write(&s, 2, 16).unwrap_err();
        assert_eq!(
            e,
            DoorbellError::InvalidValue {
                index: 2,
                value: 16,
                size: 16
            }
        );
        assert_eq!(e.aer_info(), 0x01);
        assert_eq!(
            d.read(&s, None, 2),
            Some(15),
            "an invalid write changes nothing"
        );
        d.clear();
        assert!(d.write(&s, 2, 1).is_err());
        assert_eq!(d.invalid_writes.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_page_is_shared_with_whoever_maps_the_fd() {
        let m = GuestMemory::new();
        let s = m.snapshot();
        let d = Doorbells::new(3, 8).unwrap();
        d.set_queue(&s, 5, 64);
        let (fd, offset, len) = d.page_fd();
        assert_eq!((offset, len), (0x1000, 4096));
        let other = GuestMemory::new();
        other.map(0, len as u64, fd, offset as u64, true).unwrap();
        // A client writes CQ 2's head (doorbell 5) at 5 * stride.
        other.snapshot().write(5 * 8, &33u32.to_le_bytes()).unwrap();
        assert_eq!(d.read(&s, None, 5), Some(33));
        d.write(&s, 5, 7).unwrap();
        let mut b = [0u8; 4];
        other.snapshot().read(40, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 7, "MMIO writes land in the page");
    }

    /// Guest memory of 3 pages at 10_0000h (shadow doorbells at 10_0000h,
    /// EventIdx at 10_1000h in the tests); keep the fd alive with it.
    fn host_memory() -> (GuestMemory, std::os::fd::OwnedFd) {
        use std::os::fd::AsRawFd;
        let m = GuestMemory::new();
        let fd = crate::mem::tests::memfd(0x3000);
        m.map(0x10_0000, 0x3000, fd.as_raw_fd(), 0, true).unwrap();
        (m, fd)
    }

    #[test]
    fn a_page_write_under_shadow_buffers_is_seen_and_copied_to_the_shadow() {
        let (m, _fd) = host_memory();
        let s = m.snapshot();
        let d = Doorbells::new(1, 4).unwrap();
        d.set_queue(&s, 0, 32);
        d.set_queue(&s, 2, 32);
        d.write(&s, 0, 3).unwrap();
        d.set_shadow(&s, 0x10_0000, 0x10_1000, 4096).unwrap();
        let sh = d.shadow();
        // The page still says 3 (copied at the switch): not a new write.
        assert_eq!(d.read(&s, sh, 0), Some(3));
        // A client that maps the page rings the admin SQ there only (Linux).
        d.slot(0).store(5, Ordering::SeqCst);
        assert_eq!(d.read(&s, sh, 0), Some(5), "a changed page value wins");
        let mut b = [0u8; 4];
        s.read(0x10_0000, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 5, "and is copied to the shadow slot");
        // The host then moves on in the shadow buffer only: that wins again.
        s.write(0x10_0000, &7u32.to_le_bytes()).unwrap();
        assert_eq!(d.read(&s, sh, 0), Some(7));
        // An I/O queue rung in the shadow buffer with an unchanged page.
        s.write(0x10_0000 + 8, &4u32.to_le_bytes()).unwrap();
        assert_eq!(d.read(&s, sh, 2), Some(4));
    }

    #[test]
    fn a_late_register_value_never_replaces_an_io_queues_shadow_value() {
        // Linux: shadow 1 and ring, then shadow 8 without ringing (EventIdx
        // not yet moved). The ring's value 1 reaches the device late: as a
        // posted vfio-user write, or in the mapped page found by a scan.
        let (m, _fd) = host_memory();
        let s = m.snapshot();
        let d = Doorbells::new(1, 4).unwrap();
        d.set_queue(&s, 2, 32);
        d.set_shadow(&s, 0x10_0000, 0x10_1000, 4096).unwrap();
        let sh = d.shadow();
        s.write(0x10_0000 + 8, &8u32.to_le_bytes()).unwrap();
        d.write(&s, 2, 1).unwrap();
        assert_eq!(
            d.read(&s, sh, 2),
            Some(8),
            "a late MMIO value rewound the tail"
        );
        d.slot(2).store(1, Ordering::SeqCst);
        assert_eq!(
            d.read(&s, sh, 2),
            Some(8),
            "a late page value rewound the tail"
        );
        let mut b = [0u8; 4];
        s.read(0x10_0000 + 8, &mut b).unwrap();
        assert_eq!(
            u32::from_le_bytes(b),
            8,
            "the host's shadow value was overwritten"
        );
    }

    #[test]
    fn doorbell_buffer_config_touches_only_the_slots_of_existing_queues() {
        // 1024 queue pairs span 8 KiB of slots; the host gave two pages and
        // has one queue: the guest word after them is not the device's.
        let (m, _fd) = host_memory();
        let s = m.snapshot();
        let d = Doorbells::new(1023, 4).unwrap();
        d.set_queue(&s, 0, 32);
        d.set_queue(&s, 1, 32);
        s.write(0x10_2000, &0xdead_beefu32.to_le_bytes()).unwrap();
        d.set_shadow(&s, 0x10_0000, 0x10_1000, 4096).unwrap();
        let mut b = [0u8; 4];
        s.read(0x10_2000, &mut b).unwrap();
        assert_eq!(
            u32::from_le_bytes(b),
            0xdead_beef,
            "guest memory past the buffers was written"
        );
        // An unmapped buffer is still refused before any queue exists.
        let e = Doorbells::new(1023, 4).unwrap();
        assert!(matches!(
            e.set_shadow(&s, 0x90_0000, 0x10_1000, 4096),
            Err(ShadowError::Memory(_))
        ));
    }

    #[test]
    fn an_unreadable_shadow_slot_reads_as_unknown_not_as_zero() {
        use std::os::fd::AsRawFd;
        let (m, _fd) = host_memory();
        let other = crate::mem::tests::memfd(0x1000);
        m.map(0x20_0000, 0x1000, other.as_raw_fd(), 0, true)
            .unwrap();
        let d = Doorbells::new(1, 4).unwrap();
        let s = m.snapshot();
        d.set_queue(&s, 2, 32);
        d.set_shadow(&s, 0x20_0000, 0x10_1000, 4096).unwrap();
        s.write(0x20_0000 + 8, &5u32.to_le_bytes()).unwrap();
        assert_eq!(d.read(&s, d.shadow(), 2), Some(5));
        // The client unmaps the shadow buffer: 0 would be a valid tail that
        // replays every command since the ring's start.
        m.unmap(0x20_0000, 0x1000).unwrap();
        assert_eq!(d.read(&m.snapshot(), d.shadow(), 2), None);
    }

    #[test]
    fn shadow_buffers_take_over_and_reset_drops_them() {
        let (m, _fd) = host_memory();
        let s = m.snapshot();
        let d = Doorbells::new(1, 4).unwrap();
        d.set_queue(&s, 2, 32);
        d.write(&s, 2, 9).unwrap();
        assert_eq!(
            d.set_shadow(&s, 0x10_0100, 0x10_1000, 4096),
            Err(ShadowError::Unaligned {
                iova: 0x10_0100,
                page: 4096
            })
        );
        assert!(matches!(
            d.set_shadow(&s, 0x10_0000, 0x90_0000, 4096),
            Err(ShadowError::Memory(_))
        ));
        d.set_shadow(&s, 0x10_0000, 0x10_1000, 4096).unwrap();
        let sh = d.shadow().unwrap();
        assert_eq!(
            d.read(&s, Some(sh), 2),
            Some(9),
            "the current value was copied over"
        );
        let mut b = [0u8; 4];
        s.read(0x10_1000 + 8, &mut b).unwrap();
        assert_eq!(
            u32::from_le_bytes(b),
            9,
            "EventIdx starts at the current value"
        );
        // The host writes the shadow buffer directly; the device reads it there.
        s.write(0x10_0000 + 8, &12u32.to_le_bytes()).unwrap();
        assert_eq!(d.read(&s, Some(sh), 2), Some(12));
        // An I/O queue's MMIO write is a wake-up only: the shadow stays
        // the one source of truth.
        d.write(&s, 2, 13).unwrap();
        s.read(0x10_0000 + 8, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 12);
        assert_eq!(d.read(&s, Some(sh), 2), Some(12));
        d.clear();
        assert!(d.shadow().is_none());
    }
}
