//! The io_uring path: one ring per worker, requests pushed during a pass
//! and submitted with one `io_uring_enter` at its end.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use io_uring::{opcode, types, IoUring, Probe};

use super::{Completion, Kind, Request};

/// Asks the kernel for a ring and for the operations the backend uses.
pub(super) fn probe() -> Result<(), String> {
    let ring = IoUring::new(4).map_err(|e| e.to_string())?;
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("cannot probe io_uring operations: {e}"))?;
    for (code, name) in [
        (opcode::Read::CODE, "READ"),
        (opcode::Readv::CODE, "READV"),
        (opcode::Write::CODE, "WRITE"),
        (opcode::Writev::CODE, "WRITEV"),
        (opcode::Fsync::CODE, "FSYNC"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("the kernel's io_uring lacks {name}"));
        }
    }
    Ok(())
}

/// One worker's ring.
pub struct Uring {
    ring: IoUring,
    /// Written by the kernel for every completion; the worker's waker
    /// watches it (edge triggered, never read).
    event: OwnedFd,
    /// Pushed and not yet submitted.
    queued: usize,
    /// DEFER_TASKRUN: completions wait for an enter with GETEVENTS.
    deferred: bool,
}

impl Uring {
    pub(super) fn new(depth: u32) -> std::io::Result<Uring> {
        let entries = depth.clamp(8, 4096).next_power_of_two();
        // DEFER_TASKRUN (with SINGLE_ISSUER: only this worker submits, and
        // it created the ring): completions are not run as task work that
        // interrupts the worker, one IPI each, but when the worker next
        // enters the kernel for them (reap() does when the kernel says work
        // is pending, TASKRUN_FLAG); the registered eventfd is still
        // signalled when such work is queued, so a sleeping worker wakes.
        // Older kernels (before 6.1) get a plain ring.
        let (ring, deferred) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries)
        {
            Ok(r) => (r, true),
            Err(_) => (IoUring::new(entries)?, false),
        };
        let event = super::eventfd()?;
        // Every completion signals (not only io-wq ones, as with
        // register_eventfd_async: a completion run as task work in the
        // worker's own context would then wake nobody).
        ring.submitter().register_eventfd(event.as_raw_fd())?;
        Ok(Uring {
            ring,
            event,
            queued: 0,
            deferred,
        })
    }

    /// # Safety
    /// See [`super::Aio::push`].
    pub(super) unsafe fn push(&mut self, r: Request) -> bool {
        let fd = types::Fd(r.fd);
        let e = match r.kind {
            Kind::Read if r.iovcnt == 1 => {
                // SAFETY: the caller's iovec array holds one entry.
                let v = unsafe { *r.iov };
                opcode::Read::new(fd, v.iov_base.cast(), v.iov_len as u32)
                    .offset(r.offset)
                    .build()
            }
            Kind::Read => opcode::Readv::new(fd, r.iov, r.iovcnt)
                .offset(r.offset)
                .build(),
            Kind::Write { flags } if r.iovcnt == 1 => {
                // SAFETY: as for Read.
                let v = unsafe { *r.iov };
                opcode::Write::new(fd, v.iov_base.cast_const().cast(), v.iov_len as u32)
                    .offset(r.offset)
                    .rw_flags(flags)
                    .build()
            }
            Kind::Write { flags } => opcode::Writev::new(fd, r.iov, r.iovcnt)
                .offset(r.offset)
                .rw_flags(flags)
                .build(),
            Kind::Datasync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
        .user_data(r.tag);
        for _ in 0..2 {
            // SAFETY: the entry's buffers stay valid until its completion
            // (the caller's contract).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                self.queued += 1;
                return true;
            }
            // The submission ring is full: hand it to the kernel first.
            self.submit();
        }
        // Still full (the kernel refused the submit): the caller completes
        // the command otherwise. Cannot happen while in-flight requests are
        // capped at the ring size, as the worker caps them.
        false
    }

    pub(super) fn submit(&mut self) {
        if self.queued == 0 {
            return;
        }
        loop {
            match self.ring.submit() {
                Ok(_) => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR)) => continue,
                // EBUSY/EAGAIN: completions must be reaped first; the
                // entries stay queued and the next pass submits them.
                Err(_) => return,
            }
        }
        self.queued = self.ring.submission().len();
    }

    pub(super) fn reap(&mut self, out: &mut Vec<Completion>) {
        if self.deferred && self.ring.submission().taskrun() {
            // Completions are queued as deferred work: run them (submit()
            // enters with GETEVENTS when the TASKRUN flag is up).
            let _ = self.ring.submit();
            self.queued = self.ring.submission().len();
        }
        for c in self.ring.completion() {
            out.push(Completion {
                tag: c.user_data(),
                res: c.result(),
            });
        }
    }

    pub(super) fn wait(&mut self) {
        self.queued = 0;
        let _ = self.ring.submit_and_wait(1);
        self.queued = self.ring.submission().len();
    }

    pub(super) fn notifier(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}
