//! Interrupt vectors: an eventfd notifier per vector, with the MSI-X mask and
//! pending-bit contract of QEMU's hw/pci/msix.c (`msix_notify`,
//! `msix_handle_mask_update`) applied to eventfds.
//!
//! A notification on a masked vector sets its pending bit and writes
//! nothing; unmasking a vector whose pending bit is set clears the bit and
//! writes the eventfd exactly once. State per vector is under one small
//! mutex, taken once per completion batch, so no interleaving of
//! notifications with mask/unmask from other threads can lose or double a
//! signal.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

/// A write-only notifier over an eventfd (or irqfd) handed to us.
#[derive(Debug)]
pub struct Notifier(OwnedFd);

impl Notifier {
    /// Duplicates `fd` so the caller keeps ownership of theirs.
    pub fn dup(fd: RawFd) -> Result<Notifier, IrqError> {
        if fd < 0 {
            return Err(IrqError::BadFd {
                fd,
                reason: "negative fd".into(),
            });
        }
        // SAFETY: the caller vouches fd is open for the duration of this call;
        // we only borrow it to duplicate it.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        b.try_clone_to_owned()
            .map(Notifier)
            .map_err(|e| IrqError::BadFd {
                fd,
                reason: e.to_string(),
            })
    }

    /// One 8-byte write of 1, as every eventfd consumer expects.
    #[inline]
    pub fn notify(&self) -> std::io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an fd we own.
        let n = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            let e = std::io::Error::last_os_error();
            // EAGAIN: the counter is at its maximum; the consumer will still
            // see it readable, so the signal is not lost.
            if e.raw_os_error() == Some(libc::EAGAIN) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

#[derive(Debug, Default)]
struct VectorState {
    notifier: Option<Notifier>,
    masked: bool,
    pending: bool,
}

/// The controller's interrupt vectors.
pub struct Vectors {
    v: Box<[Mutex<VectorState>]>,
    /// Eventfd writes performed.
    pub signals: AtomicU64,
    /// Notifications turned into pending bits because the vector was masked.
    pub masked_notifications: AtomicU64,
    /// Notifications on an unmasked vector with no notifier attached (lost,
    /// as an MSI-X message to an unprogrammed address would be).
    pub unrouted: AtomicU64,
    /// Eventfd writes that failed.
    pub notify_errors: AtomicU64,
}

impl Vectors {
    /// `count` vectors, unmasked, with no notifier.
    pub fn new(count: u16) -> Self {
        Vectors {
            v: (0..count)
                .map(|_| Mutex::new(VectorState::default()))
                .collect(),
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

    fn fire(&self, st: &VectorState) {
        match &st.notifier {
            Some(n) => {
                if n.notify().is_ok() {
                    self.signals.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.notify_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Attaches (Some) or detaches (None) the vector's eventfd.
    pub fn set_notifier(&self, vector: u32, fd: Option<RawFd>) -> Result<(), IrqError> {
        let slot = self.get(vector)?;
        let n = fd.map(Notifier::dup).transpose()?;
        slot.lock().unwrap_or_else(|e| e.into_inner()).notifier = n;
        Ok(())
    }

    /// `msix_notify`: masked sets pending, unmasked signals.
    #[inline]
    pub fn notify(&self, vector: u16) {
        let Some(slot) = self.v.get(usize::from(vector)) else {
            return;
        };
        let mut st = slot.lock().unwrap_or_else(|e| e.into_inner());
        if st.masked {
            st.pending = true;
            self.masked_notifications.fetch_add(1, Ordering::Relaxed);
        } else {
            self.fire(&st);
        }
    }

    /// `msix_handle_mask_update`: unmask with pending clears it and signals once.
    pub fn set_masked(&self, vector: u32, masked: bool) -> Result<(), IrqError> {
        let mut st = self.get(vector)?.lock().unwrap_or_else(|e| e.into_inner());
        st.masked = masked;
        if !masked && st.pending {
            st.pending = false;
            self.fire(&st);
        }
        Ok(())
    }

    /// True when the vector is masked.
    pub fn is_masked(&self, vector: u32) -> Result<bool, IrqError> {
        Ok(self
            .get(vector)?
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .masked)
    }

    /// Vectors with their pending bit set, ascending.
    pub fn pending(&self) -> Vec<u32> {
        self.v
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lock().unwrap_or_else(|e| e.into_inner()).pending)
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
        let v = Vectors::new(2);
        let e = eventfd();
        v.set_notifier(1, Some(e.as_raw_fd())).unwrap();
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
        assert!(v.set_notifier(0, Some(-1)).is_err());
    }

    #[test]
    fn concurrent_mask_never_loses_a_signal() {
        use std::sync::Arc;
        let v = Arc::new(Vectors::new(1));
        let e = eventfd();
        v.set_notifier(0, Some(e.as_raw_fd())).unwrap();
        let v2 = v.clone();
        let t = std::thread::spawn(move || {
            for i in 0..20000 {
                v2.set_masked(0, i % 2 == 0).unwrap();
            }
        });
        for _ in 0..20000 {
            v.notify(0);
        }
        t.join().unwrap();
        v.set_masked(0, false).unwrap();
        // Every notification either signalled, or left pending which the final
        // unmask turned into one signal: at least one signal exists and no
        // pending bit survives an unmask.
        assert!(drain(&e) >= 1);
        assert!(v.pending().is_empty());
        let s = v.signals.load(Ordering::Relaxed);
        let m = v.masked_notifications.load(Ordering::Relaxed);
        assert!(s + m >= 20000 && s <= 20000 + 10000);
    }
}
