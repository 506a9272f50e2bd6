//! Asynchronous file I/O for the file backend: io_uring, or a pool of
//! threads calling `preadv2`/`pwritev2` where io_uring is refused (seccomp
//! profiles of container runtimes, old kernels, `io_uring_disabled`).
//!
//! Each I/O worker owns one [`Aio`]: it pushes requests while it fetches a
//! batch of commands, submits them once per pass, and reaps completions on
//! its next passes (or right after submitting, for a file the kernel served
//! inline, such as one in the page cache). Completions also write an eventfd
//! the worker's waker watches, so a sleeping worker wakes for them.

mod threads;
mod uring;

use std::os::fd::RawFd;
use std::sync::OnceLock;

/// Errors of choosing or creating an I/O path.
#[derive(Debug, thiserror::Error)]
pub enum AioError {
    /// io_uring was asked for and the kernel refuses it.
    #[error("io_uring is unavailable here ({0}); use io=\"threads\" (or \"auto\")")]
    Unavailable(String),
    /// NVMEFAST_FILE_IO holds something else than a known path.
    #[error(
        "NVMEFAST_FILE_IO={0:?} is not one of \"auto\", \"io_uring\", \"threads\", \"inline\""
    )]
    BadEnv(String),
    /// The ring, the threads or the eventfd could not be created.
    #[error("cannot set up file I/O: {0}")]
    Setup(std::io::Error),
}

/// The I/O path a namespace asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// io_uring when the kernel allows it, else threads. NVMEFAST_FILE_IO
    /// overrides it.
    Auto,
    IoUring,
    Threads,
    /// Synchronous `preadv2`/`pwritev2` on the worker thread.
    Inline,
}

impl Choice {
    /// Parses "auto", "io_uring" or "threads".
    pub fn parse(s: &str) -> Option<Choice> {
        match s {
            "auto" => Some(Choice::Auto),
            "io_uring" | "uring" => Some(Choice::IoUring),
            "threads" => Some(Choice::Threads),
            "inline" => Some(Choice::Inline),
            _ => None,
        }
    }
}

/// The I/O path in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoPath {
    IoUring,
    Threads,
    /// Synchronous calls on the worker: for files with no asynchronous path
    /// in the kernel (tmpfs refuses RWF_NOWAIT, so io_uring would hand every
    /// request to one of its io-wq threads), where a call that copies from
    /// the page cache beats any hand-off. A pass with a deep backlog hands
    /// its excess to io_uring (or the pool), whose threads copy on every
    /// core (see `engine::worker::INLINE_PASS`).
    Inline,
}

impl IoPath {
    /// The name users see (stats, logs, bench output).
    pub fn name(self) -> &'static str {
        match self {
            IoPath::IoUring => "io_uring",
            IoPath::Threads => "threads",
            IoPath::Inline => "inline",
        }
    }
}

/// Whether this process may use io_uring with the operations we need,
/// asked of the kernel once.
fn uring_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(uring::probe)
}

/// Resolves a namespace's choice (and NVMEFAST_FILE_IO) to the path used;
/// `nowait`: the file takes RWF_NOWAIT (it has an asynchronous path).
pub fn choose(c: Choice, nowait: bool) -> Result<IoPath, AioError> {
    let c = match (c, std::env::var("NVMEFAST_FILE_IO")) {
        (Choice::Auto, Ok(v)) if !v.is_empty() => Choice::parse(&v).ok_or(AioError::BadEnv(v))?,
        (c, _) => c,
    };
    match c {
        Choice::Threads => Ok(IoPath::Threads),
        Choice::Inline => Ok(IoPath::Inline),
        Choice::Auto if !nowait => Ok(IoPath::Inline),
        Choice::IoUring => match uring_probe() {
            Ok(()) => Ok(IoPath::IoUring),
            Err(e) => Err(AioError::Unavailable(e.clone())),
        },
        Choice::Auto => Ok(if uring_probe().is_ok() {
            IoPath::IoUring
        } else {
            IoPath::Threads
        }),
    }
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    /// `flags`: RWF_* (RWF_DSYNC for FUA or a disabled write cache).
    Write {
        flags: i32,
    },
    /// fdatasync.
    Datasync,
}

/// One request. The iovec array and the buffers it names stay valid and
/// untouched until the completion with this `tag` is reaped.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub fd: RawFd,
    pub kind: Kind,
    pub offset: u64,
    pub iov: *const libc::iovec,
    pub iovcnt: u32,
    pub tag: u64,
}

/// A finished request: `res` is the byte count moved or a negated errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub tag: u64,
    pub res: i32,
}

/// One worker's asynchronous file I/O.
pub enum Aio {
    /// Boxed: the ring is large and the pool small.
    Uring(Box<uring::Uring>),
    Threads(threads::Pool),
}

impl Aio {
    /// A ring or a pool for `path`, sized for `depth` requests in flight.
    pub fn new(path: IoPath, depth: u32) -> Result<Aio, AioError> {
        Ok(match path {
            IoPath::IoUring => {
                Aio::Uring(Box::new(uring::Uring::new(depth).map_err(AioError::Setup)?))
            }
            IoPath::Threads | IoPath::Inline => {
                Aio::Threads(threads::Pool::new(8).map_err(AioError::Setup)?)
            }
        })
    }

    /// The path this instance uses.
    pub fn path(&self) -> IoPath {
        match self {
            Aio::Uring(_) => IoPath::IoUring,
            Aio::Threads(_) => IoPath::Threads,
        }
    }

    /// Queues a request; it reaches the kernel at the next [`Aio::submit`].
    /// False: it could not be queued (and will never complete).
    ///
    /// # Safety
    /// `r.iov` and the buffers it names stay valid, and are not otherwise
    /// accessed, until `r.tag` is reaped; `r.fd` stays open until then.
    #[must_use]
    pub unsafe fn push(&mut self, r: Request) -> bool {
        match self {
            // SAFETY: forwarded contract.
            Aio::Uring(u) => unsafe { u.push(r) },
            // SAFETY: forwarded contract.
            Aio::Threads(p) => unsafe { p.push(r) },
        }
    }

    /// Hands the queued requests to the kernel (one io_uring_enter) or the
    /// pool.
    pub fn submit(&mut self) {
        match self {
            Aio::Uring(u) => u.submit(),
            Aio::Threads(p) => p.submit(),
        }
    }

    /// Appends finished requests to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        match self {
            Aio::Uring(u) => u.reap(out),
            Aio::Threads(p) => p.reap(out),
        }
    }

    /// Blocks until a request finishes (draining before stop or reset).
    pub fn wait(&mut self) {
        match self {
            Aio::Uring(u) => u.wait(),
            Aio::Threads(p) => p.wait(),
        }
    }

    /// The eventfd written when a request finishes asynchronously.
    pub fn notifier(&self) -> RawFd {
        match self {
            Aio::Uring(u) => u.notifier(),
            Aio::Threads(p) => p.notifier(),
        }
    }
}

/// Moves all of `iov` at `offset` synchronously (preadv2/pwritev2 with
/// `flags`), resuming after short transfers. Errors are errno values; end
/// of file before the end is EIO.
///
/// # Safety
/// The buffers `iov` names are valid for the transfer (written for a read).
pub unsafe fn transfer_all(
    fd: RawFd,
    write: bool,
    offset: u64,
    iov: &[libc::iovec],
    flags: i32,
) -> Result<(), i32> {
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    if iov.len() <= 1024 {
        // The common case, in one call on the caller's iovecs (no copy).
        let Ok(at) = libc::off_t::try_from(offset) else {
            return Err(libc::EINVAL);
        };
        // SAFETY: iov names buffers the caller vouches for.
        let n = unsafe {
            if write {
                libc::pwritev2(fd, iov.as_ptr(), iov.len() as i32, at, flags)
            } else {
                libc::preadv2(fd, iov.as_ptr(), iov.len() as i32, at, flags)
            }
        };
        if n >= 0 && n as usize == total {
            return Ok(());
        }
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e != libc::EINTR {
                return Err(e);
            }
        }
    }
    // Short or interrupted: again from the start, resuming after short
    // transfers (moving bytes already moved again is harmless).
    let mut rest: Vec<libc::iovec> = iov.to_vec();
    let mut first = 0usize;
    let mut off = offset;
    while first < rest.len() {
        let cnt = (rest.len() - first).min(1024) as i32;
        let Ok(at) = libc::off_t::try_from(off) else {
            return Err(libc::EINVAL);
        };
        // SAFETY: rest[first..] are valid iovecs over buffers the caller
        // vouches for.
        let n = unsafe {
            if write {
                libc::pwritev2(fd, rest[first..].as_ptr(), cnt, at, flags)
            } else {
                libc::preadv2(fd, rest[first..].as_ptr(), cnt, at, flags)
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        let mut n = n as usize;
        off += n as u64;
        while n > 0 && first < rest.len() {
            let v = &mut rest[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: n < iov_len: still inside the same buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
        while first < rest.len() && rest[first].iov_len == 0 {
            first += 1;
        }
    }
    Ok(())
}

/// A new non-blocking eventfd.
fn eventfd() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests;
