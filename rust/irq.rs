//! Interrupt vectors: a notifier per vector (an eventfd or irqfd, the
//! KVM_SIGNAL_MSI ioctl, or a callback), with the MSI-X mask and pending-bit
//! contract of QEMU's hw/pci/msix.c (`msix_notify`,
//! `msix_handle_mask_update`) applied to all of them.
//!
//! A vector is masked when MSI-X is disabled, the function is masked
//! (MXC.FM), or its own mask bit is set (table Vector Control, or the
//! embedder's vfio-user MASK); in MSI mode, when its INTMS bit is set. A
//! notification on a masked vector sets its pending bit and delivers
//! nothing; any change that unmasks a vector whose pending bit is set clears
//! the bit and delivers exactly once. Per-vector state is under one small
//! mutex taken once per completion batch; global state changes update the
//! global word first and then visit every vector under its lock, so no
//! interleaving of notifications with mask changes on other threads can lose
//! or double a delivery.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

// Under `--cfg loom` the mask/pending state runs on loom's model-checked
// primitives (see the loom test at the bottom); otherwise on std's.
#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(loom)]
use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

/// Errors of vector configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IrqError {
    /// The vector number is not one the controller has.
    #[error(
        "interrupt vector {vector} is out of range (controller has {count} vectors: 0..{count})"
    )]
    BadVector { vector: u32, count: u32 },
    /// The fd cannot be used as a notifier.
    #[error("fd {fd} cannot be used as an interrupt notifier: {reason}")]
    BadFd { fd: RawFd, reason: String },
}

/// How interrupts reach the host (PCI: which capability the host enabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IrqMode {
    /// MSI-X: per-vector table mask, function mask, enable.
    MsiX = 0,
    /// MSI (single or multiple message): vectors masked by INTMS/INTMC.
    Msi = 1,
    /// Pin-based, level triggered: see `intx.rs`; vectors deliver nothing.
    Intx = 2,
}

impl IrqMode {
    fn from_u8(v: u8) -> IrqMode {
        match v {
            1 => IrqMode::Msi,
            2 => IrqMode::Intx,
            _ => IrqMode::MsiX,
        }
    }
}

/// Duplicates a caller's fd so they keep ownership of theirs.
pub fn dup_fd(fd: RawFd) -> Result<OwnedFd, IrqError> {
    if fd < 0 {
        return Err(IrqError::BadFd {
            fd,
            reason: "negative fd".into(),
        });
    }
    // SAFETY: the caller vouches fd is open for the duration of this call;
    // we only borrow it to duplicate it.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    b.try_clone_to_owned().map_err(|e| IrqError::BadFd {
        fd,
        reason: e.to_string(),
    })
}

/// What `/proc/self/fd` says an eventfd is.
const EVENTFD_LINK: &str = "anon_inode:[eventfd]";

/// Duplicates a caller's eventfd for a notifier a worker writes (or reads:
/// an INTx resample fd), after checking that it is one, and makes it
/// non-blocking.
///
/// A worker must never block on an fd whoever set up the interrupt
/// controls (a vfio-user client): any other kind of fd could (a pipe
/// nobody reads, a full socket), and so could a blocking eventfd whose
/// counter is at its maximum. Non-blocking (as QEMU creates its irqfds),
/// that write fails with EAGAIN instead, which [`eventfd_signal`] takes
/// for a signal already pending. O_NONBLOCK is a flag of the open file,
/// which every duplicate shares: the caller's copy becomes non-blocking
/// too.
pub fn dup_eventfd(fd: RawFd) -> Result<OwnedFd, IrqError> {
    let owned = dup_fd(fd)?;
    let bad = |reason: String| IrqError::BadFd { fd, reason };
    // Our duplicate: the caller cannot close it and reuse its number meanwhile.
    let link = format!("/proc/self/fd/{}", owned.as_raw_fd());
    let kind = std::fs::read_link(&link).map_err(|e| {
        bad(format!(
            "cannot tell whether it is an eventfd ({link}: {e}; /proc must be mounted)"
        ))
    })?;
    if kind.as_os_str() != EVENTFD_LINK {
        return Err(bad(format!(
            "it is {}, not an eventfd: pass one from eventfd(2) (os.eventfd in Python), \
             as KVM irqfds and QEMU's interrupt eventfds are",
            kind.display()
        )));
    }
    let failed = |what: &str| bad(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: fcntl on our own fd, no pointers.
    let flags = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(failed("cannot read its file status flags"));
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl on our own fd, no pointers.
        let r = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if r < 0 {
            return Err(failed("cannot make it non-blocking"));
        }
    }
    Ok(owned)
}

/// One 8-byte write of 1 to an eventfd, as every consumer (KVM irqfd
/// included) expects. The eventfd is non-blocking ([`dup_eventfd`]): the
/// write never waits.
pub fn eventfd_signal(fd: &OwnedFd) -> std::io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    if n == 8 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // EAGAIN: the counter is at its maximum; the consumer still sees it
    // readable, so the signal is not lost.
    if e.raw_os_error() == Some(libc::EAGAIN) {
        Ok(())
    } else {
        Err(e)
    }
}

/// struct kvm_msi from linux/kvm.h.
#[repr(C)]
struct KvmMsi {
    address_lo: u32,
    address_hi: u32,
    data: u32,
    flags: u32,
    devid: u32,
    pad: [u8; 12],
}
const _: () = assert!(std::mem::size_of::<KvmMsi>() == 32);
/// KVM_SIGNAL_MSI = _IOW(KVMIO, 0xa5, struct kvm_msi).
const KVM_SIGNAL_MSI: libc::c_ulong = (1 << 30) | (32 << 16) | (0xAE << 8) | 0xA5;

/// Where a vector's message goes.
pub enum Notifier {
    /// An eventfd: a plain one in a test, or a KVM irqfd.
    Eventfd(OwnedFd),
    /// KVM_SIGNAL_MSI on this VM fd with the vector's table address/data:
    /// what an emulator's msix_notify does without irqfd.
    KvmMsi(OwnedFd),
    /// A callback (the Python adaptor; tests); gets the vector number.
    Callback(Arc<dyn Fn(u32) + Send + Sync>),
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notifier::Eventfd(fd) => write!(f, "Eventfd({})", fd.as_raw_fd()),
            Notifier::KvmMsi(fd) => write!(f, "KvmMsi({})", fd.as_raw_fd()),
            Notifier::Callback(_) => write!(f, "Callback"),
        }
    }
}

/// One MSI-X table entry plus the device's pending bit.
#[derive(Debug)]
struct VectorState {
    /// Shared so a delivery can run after the lock is dropped: a callback
    /// may take other locks (the GIL) or call back into this module.
    notifier: Option<Arc<Notifier>>,
    /// Vector Control bit 0 (or the embedder's MASK/UNMASK).
    masked: bool,
    /// The PBA bit.
    pending: bool,
    address: u64,
    data: u32,
}

impl VectorState {
    fn new(masked: bool) -> Self {
        VectorState {
            notifier: None,
            masked,
            pending: false,
            address: 0,
            data: 0,
        }
    }
}

/// A delivery decided under a vector's lock, performed after it.
struct Delivery {
    notifier: Arc<Notifier>,
    vector: u32,
    address: u64,
    data: u32,
}

/// Global MSI-X control bits (MXC).
const CTL_ENABLED: u8 = 1;
const CTL_FUNCTION_MASK: u8 = 2;

/// The controller's interrupt vectors.
pub struct Vectors {
    v: Box<[Mutex<VectorState>]>,
    /// CTL_* bits.
    control: AtomicU8,
    mode: AtomicU8,
    /// INTMS: per-vector masks in MSI mode (bit 0 is the pin in INTx mode).
    intms: AtomicU32,
    /// Deliveries performed.
    signals: AtomicU64,
    /// Notifications turned into pending bits because the vector was masked.
    masked_notifications: AtomicU64,
    /// Notifications on an unmasked vector with no notifier attached (lost,
    /// as an MSI-X message to an unprogrammed address would be).
    unrouted: AtomicU64,
    /// Deliveries that failed (eventfd write or ioctl error).
    notify_errors: AtomicU64,
}

fn lock(m: &Mutex<VectorState>) -> MutexGuard<'_, VectorState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Identity of the snapshot of global state a masking decision used.
#[derive(Clone, Copy)]
struct Global {
    control: u8,
    mode: IrqMode,
    intms: u32,
}

impl Global {
    fn masks(&self, vector: usize, st: &VectorState) -> bool {
        match self.mode {
            IrqMode::MsiX => {
                self.control & CTL_ENABLED == 0
                    || self.control & CTL_FUNCTION_MASK != 0
                    || st.masked
            }
            IrqMode::Msi => vector < 32 && self.intms & (1 << vector) != 0,
            // Vectors are unused in pin mode: hold everything as pending.
            IrqMode::Intx => true,
        }
    }
}

impl Vectors {
    /// `count` vectors. `embedder_managed`: the embedder owns the MSI-X
    /// capability (a vfio-user client, a test): MSI-X starts enabled and every
    /// vector unmasked. Otherwise the PCI reset state: disabled, all masked.
    pub fn new(count: u16, embedder_managed: bool) -> Self {
        Vectors {
            v: (0..count)
                .map(|_| Mutex::new(VectorState::new(!embedder_managed)))
                .collect(),
            control: AtomicU8::new(if embedder_managed { CTL_ENABLED } else { 0 }),
            mode: AtomicU8::new(IrqMode::MsiX as u8),
            intms: AtomicU32::new(0),
            signals: AtomicU64::new(0),
            masked_notifications: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
            notify_errors: AtomicU64::new(0),
        }
    }

    /// Number of vectors.
    pub fn count(&self) -> u16 {
        self.v.len() as u16
    }

    fn get(&self, vector: u32) -> Result<&Mutex<VectorState>, IrqError> {
        self.v.get(vector as usize).ok_or(IrqError::BadVector {
            vector,
            count: self.v.len() as u32,
        })
    }

    fn global(&self) -> Global {
        // SeqCst: pairs with the SeqCst stores in the global setters so that
        // a notifier either sees the new global state or the setter's scan
        // sees the pending bit it left (see the module comment).
        Global {
            control: self.control.load(Ordering::SeqCst),
            mode: IrqMode::from_u8(self.mode.load(Ordering::SeqCst)),
            intms: self.intms.load(Ordering::SeqCst),
        }
    }

    /// Decides a delivery under the vector's lock; returns what to deliver
    /// once the lock is dropped (None: nothing routed, counted).
    fn take(&self, st: &VectorState, vector: usize) -> Option<Delivery> {
        match &st.notifier {
            Some(n) => Some(Delivery {
                notifier: n.clone(),
                vector: vector as u32,
                address: st.address,
                data: st.data,
            }),
            None => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Delivers eventfd and KVM messages at once, still under the vector's
    /// lock, so that once a mask call returns no delivery decided before it
    /// can land after it. Callbacks are handed back to run after the lock is
    /// dropped: they may take the GIL or call back into this module.
    fn fire_or_defer(&self, d: Option<Delivery>) -> Option<Delivery> {
        match d {
            Some(d) if matches!(*d.notifier, Notifier::Callback(_)) => Some(d),
            other => {
                self.fire(other);
                None
            }
        }
    }

    fn fire(&self, d: Option<Delivery>) {
        let Some(d) = d else {
            return;
        };
        let r = match &*d.notifier {
            Notifier::Eventfd(fd) => eventfd_signal(fd),
            Notifier::KvmMsi(vm) => {
                let msi = KvmMsi {
                    address_lo: d.address as u32,
                    address_hi: (d.address >> 32) as u32,
                    data: d.data,
                    flags: 0,
                    devid: 0,
                    pad: [0; 12],
                };
                // SAFETY: KVM_SIGNAL_MSI reads one struct kvm_msi, which we
                // pass by valid pointer; vm is a VM fd we own a duplicate of.
                let r = unsafe {
                    libc::ioctl(vm.as_raw_fd(), KVM_SIGNAL_MSI as _, &msi as *const KvmMsi)
                };
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
            Notifier::Callback(cb) => {
                cb(d.vector);
                Ok(())
            }
        };
        match r {
            Ok(()) => self.signals.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.notify_errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Attaches (Some) or detaches (None) the vector's notifier.
    pub fn set_notifier(&self, vector: u32, n: Option<Notifier>) -> Result<(), IrqError> {
        lock(self.get(vector)?).notifier = n.map(Arc::new);
        Ok(())
    }

    /// Attaches (Some) or detaches (None) the vector's eventfd (duplicated,
    /// checked and made non-blocking: [`dup_eventfd`]).
    pub fn set_eventfd(&self, vector: u32, fd: Option<RawFd>) -> Result<(), IrqError> {
        let n = fd.map(dup_eventfd).transpose()?.map(Notifier::Eventfd);
        self.set_notifier(vector, n)
    }

    /// `msix_notify`: masked sets pending, unmasked delivers.
    #[inline]
    pub fn notify(&self, vector: u16) {
        let i = usize::from(vector);
        let Some(slot) = self.v.get(i) else {
            return;
        };
        let d = {
            let mut st = lock(slot);
            if self.global().masks(i, &st) {
                st.pending = true;
                self.masked_notifications.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.fire_or_defer(self.take(&st, i))
        };
        self.fire(d);
    }

    /// Clears the pending bit of vector `i` if it is no longer masked and
    /// returns the delivery that replaces it.
    fn unpend(&self, i: usize, st: &mut VectorState) -> Option<Delivery> {
        if st.pending && !self.global().masks(i, st) {
            st.pending = false;
            return self.take(st, i);
        }
        None
    }

    fn rescan(&self) {
        for (i, slot) in self.v.iter().enumerate() {
            let d = self.fire_or_defer(self.unpend(i, &mut lock(slot)));
            self.fire(d);
        }
    }

    /// `msix_handle_mask_update`: unmask with pending clears it and delivers once.
    pub fn set_masked(&self, vector: u32, masked: bool) -> Result<(), IrqError> {
        let d = {
            let mut st = lock(self.get(vector)?);
            st.masked = masked;
            self.fire_or_defer(self.unpend(vector as usize, &mut st))
        };
        self.fire(d);
        Ok(())
    }

    /// True when the vector's own mask bit is set.
    pub fn is_masked(&self, vector: u32) -> Result<bool, IrqError> {
        Ok(lock(self.get(vector)?).masked)
    }

    /// The table entry: (message address, message data, mask bit).
    pub fn entry(&self, vector: u32) -> Result<(u64, u32, bool), IrqError> {
        let st = lock(self.get(vector)?);
        Ok((st.address, st.data, st.masked))
    }

    /// Writes a table entry; an unmask with pending delivers once, with the
    /// new message.
    pub fn set_entry(
        &self,
        vector: u32,
        address: u64,
        data: u32,
        masked: bool,
    ) -> Result<(), IrqError> {
        let d = {
            let mut st = lock(self.get(vector)?);
            st.address = address;
            st.data = data;
            st.masked = masked;
            self.fire_or_defer(self.unpend(vector as usize, &mut st))
        };
        self.fire(d);
        Ok(())
    }

    /// Reads dword `field` (0, 4, 8 or 12) of table entry `vector`.
    pub fn table_dword(&self, vector: u32, field: u32) -> Result<u32, IrqError> {
        let st = lock(self.get(vector)?);
        Ok(match field {
            0 => st.address as u32,
            4 => (st.address >> 32) as u32,
            8 => st.data,
            _ => u32::from(st.masked),
        })
    }

    /// Writes dword `field` of table entry `vector` in one step under the
    /// vector's lock, so a concurrent `set_masked` (vfio-user MASK) is never
    /// undone by a read-modify-write of the whole entry.
    pub fn write_table_dword(&self, vector: u32, field: u32, value: u32) -> Result<(), IrqError> {
        let d = {
            let mut st = lock(self.get(vector)?);
            match field {
                // Message Address bits 1:0 are reserved (dword aligned).
                0 => st.address = (st.address & !0xffff_ffff) | u64::from(value & !3),
                4 => st.address = (st.address & 0xffff_ffff) | (u64::from(value) << 32),
                8 => st.data = value,
                // Vector Control: bit 0 is Mask, the rest reserved.
                _ => st.masked = value & 1 != 0,
            }
            self.fire_or_defer(self.unpend(vector as usize, &mut st))
        };
        self.fire(d);
        Ok(())
    }

    /// MSI-X Enable and Function Mask (MXC.MXE, MXC.FM).
    pub fn set_control(&self, enabled: bool, function_masked: bool) {
        let c = if enabled { CTL_ENABLED } else { 0 }
            | if function_masked {
                CTL_FUNCTION_MASK
            } else {
                0
            };
        // SeqCst: see global().
        self.control.store(c, Ordering::SeqCst);
        self.rescan();
    }

    /// (MSI-X enabled, function masked).
    pub fn control(&self) -> (bool, bool) {
        let c = self.control.load(Ordering::SeqCst);
        (c & CTL_ENABLED != 0, c & CTL_FUNCTION_MASK != 0)
    }

    /// Selects MSI-X, MSI or pin-based delivery.
    pub fn set_mode(&self, mode: IrqMode) {
        // SeqCst: see global().
        self.mode.store(mode as u8, Ordering::SeqCst);
        self.rescan();
    }

    /// The delivery mode.
    pub fn mode(&self) -> IrqMode {
        IrqMode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    /// INTMS/INTMC: the interrupt mask (per vector in MSI mode).
    pub fn set_intms(&self, mask: u32) {
        // SeqCst: see global().
        self.intms.store(mask, Ordering::SeqCst);
        self.rescan();
    }

    /// The interrupt mask.
    pub fn intms(&self) -> u32 {
        self.intms.load(Ordering::SeqCst)
    }

    /// MSI-X reset (QEMU `msix_reset`): disabled, table zeroed, every vector
    /// masked, every pending bit cleared. Notifiers stay: they are the
    /// embedder's wiring, not device state.
    pub fn reset(&self, embedder_managed: bool) {
        self.control.store(
            if embedder_managed { CTL_ENABLED } else { 0 },
            Ordering::SeqCst,
        );
        self.intms.store(0, Ordering::SeqCst);
        for slot in self.v.iter() {
            let mut st = lock(slot);
            st.masked = !embedder_managed;
            st.pending = false;
            st.address = 0;
            st.data = 0;
        }
    }

    /// Deliveries performed.
    pub fn signals(&self) -> u64 {
        self.signals.load(Ordering::Relaxed)
    }

    /// Notifications held as pending bits.
    pub fn masked_notifications(&self) -> u64 {
        self.masked_notifications.load(Ordering::Relaxed)
    }

    /// Notifications lost for want of a notifier.
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Deliveries that failed.
    pub fn notify_errors(&self) -> u64 {
        self.notify_errors.load(Ordering::Relaxed)
    }

    /// Vectors with their pending bit set, ascending.
    pub fn pending(&self) -> Vec<u32> {
        self.v
            .iter()
            .enumerate()
            .filter(|(_, s)| lock(s).pending)
            .map(|(i, _)| i as u32)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    pub(crate) fn eventfd() -> OwnedFd {
        // SAFETY: eventfd returns a new fd we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is fresh and owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn only_eventfds_become_notifiers_and_they_never_block() {
        let v = Vectors::new(2, true);
        let mut p = [0; 2];
        // SAFETY: pipe writes two fds into a valid [c_int; 2].
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        // SAFETY: fresh fds owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        for fd in [&r, &w] {
            let e = v.set_eventfd(0, Some(fd.as_raw_fd())).unwrap_err();
            assert!(e.to_string().contains("pipe:["), "{e}");
            assert!(e.to_string().contains("not an eventfd"), "{e}");
        }
        // A blocking eventfd filled to its maximum (2^64 - 2).
        // SAFETY: eventfd returns a new fd we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh fd owned by nobody else.
        let e = unsafe { OwnedFd::from_raw_fd(fd) };
        let max: u64 = u64::MAX - 1;
        // SAFETY: an 8-byte write from a valid u64.
        let n = unsafe { libc::write(e.as_raw_fd(), (&max as *const u64).cast(), 8) };
        assert_eq!(n, 8);
        v.set_eventfd(0, Some(e.as_raw_fd())).unwrap();
        // SAFETY: fcntl on our own fd, no pointers.
        let flags = unsafe { libc::fcntl(e.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(
            flags & libc::O_NONBLOCK,
            0,
            "made non-blocking (shared flag)"
        );
        // The write fails with EAGAIN instead of blocking this thread for
        // ever: the vector's signal is pending in the full counter.
        v.notify(0);
        assert_eq!(
            v.notify_errors.load(Ordering::Relaxed),
            0,
            "EAGAIN: already signalled"
        );
        assert_eq!(drain(&e), max);
    }

    pub(crate) fn drain(fd: &OwnedFd) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            v
        } else {
            0
        }
    }

    #[test]
    fn msix_notify_contract() {
        let v = Vectors::new(2, true);
        let e = eventfd();
        v.set_eventfd(1, Some(e.as_raw_fd())).unwrap();
        v.notify(1);
        assert_eq!(drain(&e), 1);
        v.set_masked(1, true).unwrap();
        v.notify(1);
        v.notify(1);
        assert_eq!(drain(&e), 0, "nothing while masked");
        assert_eq!(v.pending(), vec![1]);
        v.set_masked(1, false).unwrap();
        assert_eq!(drain(&e), 1, "exactly one on unmask with pending");
        assert!(v.pending().is_empty());
        v.set_masked(1, true).unwrap();
        v.set_masked(1, false).unwrap();
        assert_eq!(drain(&e), 0, "none on unmask without pending");
        assert!(v.set_masked(2, true).is_err());
        assert!(v.set_eventfd(0, Some(-1)).is_err());
    }

    #[test]
    fn function_mask_and_enable_hold_and_release_every_vector() {
        let v = Vectors::new(3, false);
        let fds: Vec<_> = (0..3).map(|_| eventfd()).collect();
        for (i, f) in fds.iter().enumerate() {
            v.set_eventfd(i as u32, Some(f.as_raw_fd())).unwrap();
        }
        // PCI reset state: disabled and every entry masked.
        v.notify(0);
        assert_eq!(v.pending(), vec![0]);
        v.set_control(true, false);
        assert_eq!(drain(&fds[0]), 0, "entry 0 is still masked");
        v.set_entry(0, 0xfee0_0000, 0x41, false).unwrap();
        assert_eq!(
            drain(&fds[0]),
            1,
            "unmasking the entry delivers the pending one"
        );
        v.set_entry(1, 0xfee0_0000, 0x42, false).unwrap();
        v.set_entry(2, 0xfee0_0000, 0x43, false).unwrap();
        v.set_control(true, true);
        v.notify(1);
        v.notify(2);
        assert_eq!(
            drain(&fds[1]) + drain(&fds[2]),
            0,
            "function mask holds them"
        );
        assert_eq!(v.pending(), vec![1, 2]);
        v.set_control(false, false);
        assert_eq!(
            drain(&fds[1]) + drain(&fds[2]),
            0,
            "MSI-X disabled still holds them"
        );
        v.set_control(true, false);
        assert_eq!(
            (drain(&fds[1]), drain(&fds[2])),
            (1, 1),
            "enable + unmask releases each once"
        );
        assert!(v.pending().is_empty());
        assert_eq!(v.entry(2).unwrap(), (0xfee0_0000, 0x43, false));
    }

    #[test]
    fn msi_mode_masks_with_intms() {
        let v = Vectors::new(2, true);
        let e = eventfd();
        v.set_eventfd(1, Some(e.as_raw_fd())).unwrap();
        v.set_mode(IrqMode::Msi);
        v.set_intms(0b10);
        v.notify(1);
        assert_eq!(drain(&e), 0);
        v.set_intms(0);
        assert_eq!(drain(&e), 1, "INTMC releases the held interrupt once");
    }

    #[test]
    fn callback_notifier() {
        let v = Vectors::new(1, true);
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        v.set_notifier(
            0,
            Some(Notifier::Callback(Arc::new(move |vec| {
                assert_eq!(vec, 0);
                h.fetch_add(1, Ordering::Relaxed);
            }))),
        )
        .unwrap();
        v.notify(0);
        v.notify(0);
        assert_eq!(hits.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn concurrent_mask_never_loses_or_doubles() {
        // Every notification either delivers or leaves the pending bit; each
        // unmask turns a set pending bit into exactly one delivery. So the
        // deliveries seen equal: notifications while unmasked + pending-bit
        // clears, and after the final unmask no pending bit survives.
        let v = Arc::new(Vectors::new(1, true));
        let e = eventfd();
        v.set_eventfd(0, Some(e.as_raw_fd())).unwrap();
        let v2 = v.clone();
        let t = std::thread::spawn(move || {
            for i in 0..20000 {
                if i % 3 == 0 {
                    v2.set_control(true, i % 2 == 0);
                } else {
                    v2.set_masked(0, i % 2 == 0).unwrap();
                }
            }
        });
        for _ in 0..20000 {
            v.notify(0);
        }
        t.join().unwrap();
        v.set_control(true, false);
        v.set_masked(0, false).unwrap();
        assert!(v.pending().is_empty());
        let delivered = drain(&e);
        assert_eq!(delivered, v.signals.load(Ordering::Relaxed));
        assert!((1..=20000).contains(&delivered));
    }
}

/// Exhaustive interleavings of notifications against mask, function mask
/// and unmask, on loom's model of the mutex and atomics. Run with
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::tests::{drain, eventfd};
    use super::*;
    use loom::thread;

    #[test]
    fn loom_mask_contract_holds_under_every_interleaving() {
        loom::model(|| {
            let v = Arc::new(Vectors::new(1, true));
            let e = Arc::new(eventfd());
            v.set_eventfd(0, Some(e.as_raw_fd())).unwrap();
            let (va, vb) = (v.clone(), v.clone());
            let eb = e.clone();
            let notifier = thread::spawn(move || {
                va.notify(0);
                va.notify(0);
            });
            let masker = thread::spawn(move || {
                vb.set_masked(0, true).unwrap();
                // Whatever was decided before the mask has been written by now.
                let _ = drain(&eb);
                vb.set_control(true, true);
                thread::yield_now();
                assert_eq!(drain(&eb), 0, "a signal arrived while masked");
                vb.set_control(true, false);
                vb.set_masked(0, false).unwrap();
            });
            notifier.join().unwrap();
            masker.join().unwrap();
            assert!(v.pending().is_empty(), "a pending bit survived the unmask");
            let signals = v.signals.load(Ordering::SeqCst);
            let held = v.masked_notifications.load(Ordering::SeqCst);
            assert!(signals >= 1, "both notifications were lost");
            assert!(signals <= 2, "more deliveries than notifications");
            assert!(signals + held >= 2);
        });
    }

    #[test]
    fn loom_function_unmask_delivers_exactly_once() {
        loom::model(|| {
            let v = Arc::new(Vectors::new(1, true));
            let e = Arc::new(eventfd());
            v.set_eventfd(0, Some(e.as_raw_fd())).unwrap();
            let va = v.clone();
            let vb = v.clone();
            let notifier = thread::spawn(move || va.notify(0));
            let masker = thread::spawn(move || {
                vb.set_control(true, true);
                vb.set_control(true, false);
            });
            notifier.join().unwrap();
            masker.join().unwrap();
            assert!(
                v.pending().is_empty(),
                "the function unmask left it pending"
            );
            assert_eq!(drain(&e), 1, "one notification, exactly one signal");
        });
    }
}
