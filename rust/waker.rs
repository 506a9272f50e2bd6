//! How a sleeping worker is woken: an epoll set holding one internal
//! eventfd (rung by MMIO doorbell writes and API calls) and the embedder's
//! ioeventfds (one per doorbell, written by KVM or a vfio-user client with no
//! value: the worker reads the value from the doorbell page or the shadow
//! buffer).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Errors of waker setup.
#[derive(Debug, thiserror::Error)]
pub enum WakerError {
    /// epoll or eventfd creation failed.
    #[error("cannot create the worker's wake-up fds: {0}")]
    Create(std::io::Error),
    /// The ioeventfd could not be watched.
    #[error("fd {fd} cannot be used as an ioeventfd: {reason}")]
    BadFd { fd: RawFd, reason: String },
}

/// One worker's wake-up mechanism.
pub struct Waker {
    epoll: OwnedFd,
    internal: OwnedFd,
    /// Set by the worker before it sleeps (see `Doorbells::write`).
    sleeping: AtomicBool,
    /// Wake-ups sent to a sleeping worker.
    pub wakeups: AtomicU64,
}

fn epoll_add(epoll: &OwnedFd, fd: RawFd, events: u32) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: a valid epoll fd, an fd the caller keeps open, a valid event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Waker {
    /// A new waker with its internal eventfd.
    pub fn new() -> Result<Waker, WakerError> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(WakerError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: ep is a fresh fd owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: eventfd returns a new fd or -1.
        let ev = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if ev < 0 {
            return Err(WakerError::Create(std::io::Error::last_os_error()));
        }
        // SAFETY: ev is a fresh fd owned by nobody else.
        let internal = unsafe { OwnedFd::from_raw_fd(ev) };
        epoll_add(&epoll, internal.as_raw_fd(), libc::EPOLLIN as u32)
            .map_err(WakerError::Create)?;
        Ok(Waker {
            epoll,
            internal,
            sleeping: AtomicBool::new(false),
            wakeups: AtomicU64::new(0),
        })
    }

    /// Watches an ioeventfd. Edge triggered and never read: every write to
    /// an eventfd wakes its waiters even when the counter is already non-zero,
    /// so the fd (shared with KVM or the client) needs no draining and no
    /// flag changes on its file description.
    pub fn watch(&self, fd: &OwnedFd) -> Result<(), WakerError> {
        epoll_add(
            &self.epoll,
            fd.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
        )
        .map_err(|e| WakerError::BadFd {
            fd: fd.as_raw_fd(),
            reason: e.to_string(),
        })
    }

    /// Watches a completion eventfd of the worker's file I/O (edge
    /// triggered, never read, as for ioeventfds). The caller keeps `fd`
    /// open while watched; closing it removes it from the set.
    pub fn watch_raw(&self, fd: RawFd) -> Result<(), WakerError> {
        epoll_add(&self.epoll, fd, (libc::EPOLLIN | libc::EPOLLET) as u32).map_err(|e| {
            WakerError::BadFd {
                fd,
                reason: e.to_string(),
            }
        })
    }

    /// Stops watching an ioeventfd (errors ignored: the fd may be gone).
    pub fn unwatch(&self, fd: &OwnedFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer on modern kernels;
        // we pass a valid one anyway.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
    }

    /// Wakes the worker if it sleeps (or is about to).
    #[inline]
    pub fn wake_if_sleeping(&self) {
        // SeqCst pairs with prepare_sleep's store and the worker's re-check
        // of the doorbells (Dekker): either the worker sees the new doorbell
        // value, or this load sees it sleeping.
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Wakes the worker unconditionally.
    pub fn wake(&self) {
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: 8-byte write from a valid u64 to our eventfd; EAGAIN
        // (counter full) still leaves it readable, so nothing is lost.
        unsafe { libc::write(self.internal.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The worker announces it is about to sleep; it must re-check for work
    /// after this and before `sleep`.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        // SeqCst fence: the worker's re-check of the doorbells after this
        // uses Acquire loads, which alone could be ordered before the store
        // above; the fence keeps the Dekker pairing with wake_if_sleeping
        // (doorbell store SeqCst, then this flag's load) without relying on
        // a lock taken in between.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Sleeps until a wake, an ioeventfd write, or `timeout`.
    pub fn sleep(&self, timeout: Duration) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let n = wait(self.epoll.as_raw_fd(), &mut events, timeout);
        for ev in events.iter().take(n.max(0) as usize) {
            if ev.u64 == self.internal.as_raw_fd() as u64 {
                let mut v: u64 = 0;
                // SAFETY: 8-byte read into a valid u64 from our non-blocking eventfd.
                unsafe { libc::read(self.internal.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            }
        }
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// The worker did not sleep after all.
    pub fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

/// epoll_pwait2 refused (a kernel before 5.11, or a seccomp filter):
/// epoll_wait from then on.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

/// epoll_wait with the timeout's sub-millisecond part kept: a doorbell scan
/// or coalescing deadline of 100 us must not become a 0 ms busy poll (nor
/// a 1 ms sleep). epoll_pwait2 takes a timespec; it is called as a raw
/// syscall so the module loads against any glibc. Returns the number of
/// events (negative on error, as the syscalls do).
fn wait(epoll: RawFd, events: &mut [libc::epoll_event; 8], timeout: Duration) -> i32 {
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: a valid epoll fd, a buffer of 8 events, a valid timespec,
        // no signal mask (null) of size 0.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epoll,
                events.as_mut_ptr(),
                8,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            return n as i32;
        }
        // ENOSYS, or EPERM from a seccomp filter that predates the call:
        // either way it will never work here, and retrying would spin.
        NO_PWAIT2.store(true, Ordering::Relaxed);
    }
    // Rounded up: sleeping a little long beats spinning.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: a valid epoll fd and a buffer of 8 events.
    unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 8, ms) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::tests::eventfd;
    use std::time::Instant;

    #[test]
    fn sub_millisecond_sleeps_sleep() {
        let w = Waker::new().unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            w.sleep(Duration::from_micros(300));
        }
        assert!(
            t.elapsed() >= Duration::from_micros(3000),
            "300 us sleeps returned at once: {:?} for 10",
            t.elapsed()
        );
    }

    #[test]
    fn wakes_on_internal_and_ioeventfd() {
        let w = Waker::new().unwrap();
        let t = Instant::now();
        w.sleep(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(15), "timeout honoured");
        w.prepare_sleep();
        w.wake_if_sleeping();
        let t = Instant::now();
        w.sleep(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1));
        let io = eventfd();
        w.watch(&io).unwrap();
        crate::irq::eventfd_signal(&io).unwrap();
        let t = Instant::now();
        w.sleep(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1), "ioeventfd wakes");
        // Edge triggered: without a new write, no new wake-up.
        let t = Instant::now();
        w.sleep(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(15));
        crate::irq::eventfd_signal(&io).unwrap();
        let t = Instant::now();
        w.sleep(Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a second write wakes again"
        );
        w.unwatch(&io);
    }
}
