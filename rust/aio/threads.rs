//! The fallback path: a pool of threads calling `preadv2`/`pwritev2` and
//! `fdatasync`, for where io_uring is refused.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{transfer_all, Completion, Kind, Request};

/// A request on its way to a pool thread: the iovecs are copied, the
/// buffers they name stay the worker's (see [`super::Aio::push`]).
struct Job {
    fd: RawFd,
    kind: Kind,
    offset: u64,
    iov: Vec<libc::iovec>,
    tag: u64,
}

// SAFETY: the iovecs point into guest memory (or the worker's buffers) that
// the submitter keeps valid and untouched until the completion is reaped;
// moving the job to another thread changes nothing about that.
unsafe impl Send for Job {}

struct State {
    jobs: Mutex<VecDeque<Job>>,
    more: Condvar,
    done: Mutex<Vec<Completion>>,
    ready: AtomicUsize,
    stop: AtomicBool,
    event: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One worker's pool.
pub struct Pool {
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
    queued: Vec<Job>,
}

impl Pool {
    pub(super) fn new(n: usize) -> std::io::Result<Pool> {
        let state = Arc::new(State {
            jobs: Mutex::new(VecDeque::new()),
            more: Condvar::new(),
            done: Mutex::new(Vec::new()),
            ready: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            event: super::eventfd()?,
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let s = Arc::clone(&state);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nvmefast-fileio-{i}"))
                    .spawn(move || run(&s))?,
            );
        }
        Ok(Pool {
            state,
            threads,
            queued: Vec::new(),
        })
    }

    /// # Safety
    /// See [`super::Aio::push`].
    pub(super) unsafe fn push(&mut self, r: Request) -> bool {
        let iov = if r.iovcnt == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller's array holds iovcnt entries.
            unsafe { std::slice::from_raw_parts(r.iov, r.iovcnt as usize) }.to_vec()
        };
        self.queued.push(Job {
            fd: r.fd,
            kind: r.kind,
            offset: r.offset,
            iov,
            tag: r.tag,
        });
        true
    }

    pub(super) fn submit(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let n = self.queued.len();
        lock(&self.state.jobs).extend(self.queued.drain(..));
        if n == 1 {
            self.state.more.notify_one();
        } else {
            self.state.more.notify_all();
        }
    }

    pub(super) fn reap(&mut self, out: &mut Vec<Completion>) {
        // Acquire: pairs with the Release in run(), so the completion's
        // data (written by the pool thread's syscall) is visible.
        if self.state.ready.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut done = lock(&self.state.done);
        self.state.ready.fetch_sub(done.len(), Ordering::Relaxed);
        out.append(&mut done);
    }

    pub(super) fn wait(&mut self) {
        self.submit();
        if self.state.ready.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    pub(super) fn notifier(&self) -> RawFd {
        self.state.event.as_raw_fd()
    }
}

fn run(s: &State) {
    loop {
        let job = {
            let mut jobs = lock(&s.jobs);
            loop {
                if let Some(j) = jobs.pop_front() {
                    break j;
                }
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                jobs = s.more.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
        };
        let len: usize = job.iov.iter().map(|v| v.iov_len).sum();
        let r = match job.kind {
            // SAFETY: the submitter keeps the buffers valid until reaped.
            Kind::Read => unsafe { transfer_all(job.fd, false, job.offset, &job.iov, 0) },
            // SAFETY: as for Read.
            Kind::Write { flags } => unsafe {
                transfer_all(job.fd, true, job.offset, &job.iov, flags)
            },
            Kind::Datasync => {
                // SAFETY: fdatasync on an fd the submitter keeps open.
                if unsafe { libc::fdatasync(job.fd) } == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO))
                }
            }
        };
        let res = match r {
            Ok(()) => i32::try_from(len).unwrap_or(i32::MAX),
            Err(e) => -e,
        };
        {
            let mut done = lock(&s.done);
            done.push(Completion { tag: job.tag, res });
            // Release: publishes the completion (and the data the syscall
            // wrote) to reap()'s Acquire load.
            s.ready.fetch_add(1, Ordering::Release);
        }
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a valid u64 to our eventfd.
        unsafe { libc::write(s.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        {
            let _held = lock(&self.state.jobs);
            self.state.more.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
