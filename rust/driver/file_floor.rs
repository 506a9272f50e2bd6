//! The file backend's floor when fio is not installed: the raw io_uring
//! loop on the same file, nothing between the loop and the kernel.
//!
//! It does what fio's io_uring engine does with default options (its ring
//! flags, no registered buffers or files, no SQPOLL, no polled
//! completions): keep `qd`
//! random, block-aligned reads or writes in flight, wait for at least one
//! completion with the same `io_uring_enter` that submits the replacements,
//! and time each command from its push into the SQ to its CQE.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

use super::bench::{Histogram, Outcome};
use super::Rng;

/// Reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    /// `IORING_OP_READ` of random blocks.
    Read,
    /// `IORING_OP_WRITE` of random blocks (a fixed pattern).
    Write,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Params {
    /// The file or block device (its whole size is the range).
    pub path: String,
    pub rw: Rw,
    /// Commands in flight, 1..=4096.
    pub qd: u32,
    /// Bytes per command: a multiple of 512, at most 1 MiB.
    pub block_size: u32,
    /// Open with `O_DIRECT`.
    pub direct: bool,
    pub seconds: f64,
}

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// Out-of-range parameters.
    #[error("{0}")]
    Params(String),
    /// The file could not be opened or sized.
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file holds less than one block.
    #[error("{path}: {size} bytes is less than one {block_size}-byte block")]
    TooSmall {
        path: String,
        size: u64,
        block_size: u32,
    },
    /// io_uring refused (seccomp, an old kernel, a ring limit) or failed.
    #[error("io_uring: {0}")]
    Uring(std::io::Error),
    /// The ring was full when a command was pushed (a bookkeeping bug).
    #[error("io_uring submission queue full")]
    QueueFull,
    /// No completion came for 5 s.
    #[error("no completion within 5 s")]
    Stalled,
}

/// `qd * block_size` bytes, 4096-byte aligned (what `O_DIRECT` asks).
struct Buffers {
    ptr: *mut u8,
    layout: Layout,
}

impl Buffers {
    fn new(len: usize, fill: u8) -> Result<Self, FloorError> {
        let layout = Layout::from_size_align(len, 4096)
            .map_err(|e| FloorError::Params(format!("buffers of {len} bytes: {e}")))?;
        if len == 0 {
            return Err(FloorError::Params("empty buffers".into()));
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { alloc::alloc(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is a fresh allocation of `len` bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Ok(Buffers { ptr, layout })
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once; no
        // command is in flight any more: `uring_loop` drops the buffers only
        // after the loop reaped every command, and leaks them otherwise.
        unsafe { alloc::dealloc(self.ptr, self.layout) };
    }
}

fn open(p: &Params) -> Result<(File, u64), FloorError> {
    let open_err = |source| FloorError::Open {
        path: p.path.clone(),
        source,
    };
    let mut flags = libc::O_CLOEXEC;
    if p.direct {
        flags |= libc::O_DIRECT;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(p.rw == Rw::Write)
        .custom_flags(flags)
        .open(&p.path)
        .map_err(open_err)?;
    // Seeking to the end sizes block devices too (their metadata says 0).
    let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
    Ok((file, size))
}

/// A ring set up as fio 3.33's io_uring engine sets up its own: a CQ of
/// `qd` entries, cooperative task running, a single issuer whose task work
/// waits until it reaps (`DEFER_TASKRUN`); each flag dropped, in fio's
/// order, when the kernel refuses it with EINVAL.
fn ring_like_fio(qd: u32) -> std::io::Result<IoUring> {
    let mut last = None;
    for (defer, coop) in [(true, true), (false, true), (false, false)] {
        let mut b = IoUring::builder();
        b.setup_cqsize(qd);
        if coop {
            b.setup_coop_taskrun();
        }
        if defer {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        match b.build(qd) {
            Ok(ring) => return Ok(ring),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => IoUring::new(qd),
    }
}

/// Runs `p.rw` at `p.qd` on `p.path` for `p.seconds` through a fresh
/// io_uring. The outcome's `errors` counts completions with a negative or
/// short result; its doorbell and interrupt counts stay 0.
pub fn uring_loop(p: &Params) -> Result<Outcome, FloorError> {
    if !(1..=4096).contains(&p.qd) {
        return Err(FloorError::Params(format!(
            "qd {} must be in 1..=4096",
            p.qd
        )));
    }
    if p.block_size == 0 || p.block_size % 512 != 0 || p.block_size > 1 << 20 {
        return Err(FloorError::Params(format!(
            "block_size {} must be a multiple of 512 up to 1 MiB",
            p.block_size
        )));
    }
    if !(p.seconds > 0.0 && p.seconds < 3600.0) {
        return Err(FloorError::Params(format!(
            "seconds {} must be in (0, 3600)",
            p.seconds
        )));
    }
    let (file, size) = open(p)?;
    let blocks = size / u64::from(p.block_size);
    if blocks == 0 {
        return Err(FloorError::TooSmall {
            path: p.path.clone(),
            size,
            block_size: p.block_size,
        });
    }
    let qd = usize::try_from(p.qd).map_err(|e| FloorError::Params(e.to_string()))?;
    let bs = usize::try_from(p.block_size).map_err(|e| FloorError::Params(e.to_string()))?;
    let total = qd
        .checked_mul(bs)
        .ok_or_else(|| FloorError::Params("qd * block_size overflows".into()))?;
    let bufs = Buffers::new(total, 0xa5)?;
    let ring = ring_like_fio(p.qd).map_err(FloorError::Uring)?;
    let run = Run {
        fd: types::Fd(file.as_raw_fd()),
        rw: p.rw,
        bufs: &bufs,
        block_size: p.block_size,
        blocks,
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        submitted: vec![Instant::now(); qd],
    };
    let mut outstanding = 0usize;
    let result = run.drive(
        ring,
        qd,
        Duration::from_secs_f64(p.seconds),
        &mut outstanding,
    );
    if outstanding > 0 {
        // An error left commands in flight: the kernel may still write into
        // the buffers (or read them), so they must never be reused.
        std::mem::forget(bufs);
    }
    drop(file);
    result
}

/// The loop's state.
struct Run<'a> {
    fd: types::Fd,
    rw: Rw,
    bufs: &'a Buffers,
    block_size: u32,
    blocks: u64,
    rng: Rng,
    submitted: Vec<Instant>,
}

impl Run<'_> {
    fn push(&mut self, ring: &mut IoUring, slot: usize) -> Result<(), FloorError> {
        let offset = (self.rng.next_u64() % self.blocks)
            .checked_mul(u64::from(self.block_size))
            .ok_or_else(|| FloorError::Params("offset overflows".into()))?;
        let start = slot
            .checked_mul(self.block_size as usize)
            .ok_or_else(|| FloorError::Params("buffer offset overflows".into()))?;
        // SAFETY: `slot < qd`, so `start + block_size <= qd * block_size`,
        // the allocation's length: the pointer stays inside it.
        let buf = unsafe { self.bufs.ptr.add(start) };
        let user_data = slot as u64;
        let sqe = match self.rw {
            Rw::Read => opcode::Read::new(self.fd, buf, self.block_size)
                .offset(offset)
                .build(),
            Rw::Write => opcode::Write::new(self.fd, buf, self.block_size)
                .offset(offset)
                .build(),
        }
        .user_data(user_data);
        self.submitted[slot] = Instant::now();
        // SAFETY: the buffer slice `buf..buf + block_size` belongs to this
        // slot alone and lives in `bufs`, which outlives the ring (see
        // `Run`); the slot is reused only after its CQE is reaped, and the
        // file descriptor stays open until `drive` returns.
        unsafe { ring.submission().push(&sqe) }.map_err(|_| FloorError::QueueFull)
    }

    /// Runs the loop; `outstanding` says how many commands are still in
    /// flight when it returns (0 unless it returns an error).
    fn drive(
        mut self,
        mut ring: IoUring,
        qd: usize,
        run_for: Duration,
        outstanding: &mut usize,
    ) -> Result<Outcome, FloorError> {
        let mut hist = Histogram::default();
        let mut out = Outcome::default();
        let mut reaped: Vec<(u64, i32)> = Vec::with_capacity(qd);
        let start = Instant::now();
        let deadline = start + run_for;
        for slot in 0..qd {
            self.push(&mut ring, slot)?;
            *outstanding += 1;
        }
        let mut draining = false;
        let mut idle_since = Instant::now();
        while *outstanding > 0 {
            ring.submit_and_wait(1).map_err(FloorError::Uring)?;
            reaped.clear();
            reaped.extend(ring.completion().map(|c| (c.user_data(), c.result())));
            if reaped.is_empty() {
                if idle_since.elapsed() > Duration::from_secs(5) {
                    return Err(FloorError::Stalled);
                }
                continue;
            }
            let now = Instant::now();
            idle_since = now;
            if now >= deadline {
                draining = true;
            }
            for &(user_data, res) in &reaped {
                let slot = usize::try_from(user_data)
                    .ok()
                    .filter(|s| *s < qd)
                    .ok_or_else(|| FloorError::Params(format!("unknown user_data {user_data}")))?;
                if u32::try_from(res).ok() != Some(self.block_size) {
                    out.errors += 1;
                }
                hist.record(now.duration_since(self.submitted[slot]).as_nanos() as u64);
                out.ios += 1;
                *outstanding -= 1;
                if !draining {
                    self.push(&mut ring, slot)?;
                    *outstanding += 1;
                }
            }
        }
        out.seconds = start.elapsed().as_secs_f64();
        out.set_latencies(&hist);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(bytes: usize) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "nvmefast-file-floor-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0x11; bytes]).unwrap();
        (path, f)
    }

    fn params(path: &std::path::Path, rw: Rw, qd: u32) -> Params {
        Params {
            path: path.to_string_lossy().into_owned(),
            rw,
            qd,
            block_size: 4096,
            direct: false,
            seconds: 0.05,
        }
    }

    #[test]
    fn reads_and_writes_complete() {
        let (path, _f) = temp_file(1 << 20);
        for rw in [Rw::Read, Rw::Write] {
            for qd in [1, 8] {
                match uring_loop(&params(&path, rw, qd)) {
                    Ok(o) => {
                        assert!(o.ios > u64::from(qd), "{rw:?} QD{qd}: {o:?}");
                        assert_eq!(o.errors, 0, "{rw:?} QD{qd}: {o:?}");
                        assert!(o.p50_ns <= o.p99_ns && o.mean_ns > 0.0, "{o:?}");
                    }
                    // A sandbox without io_uring: nothing to measure here.
                    Err(FloorError::Uring(e)) => eprintln!("io_uring unavailable: {e}"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_input_is_an_error() {
        let missing = std::path::Path::new("/nonexistent/nvmefast-floor");
        assert!(matches!(
            uring_loop(&params(missing, Rw::Read, 1)),
            Err(FloorError::Open { .. })
        ));
        let (path, _f) = temp_file(1024);
        assert!(matches!(
            uring_loop(&params(&path, Rw::Read, 1)),
            Err(FloorError::TooSmall { .. })
        ));
        assert!(matches!(
            uring_loop(&params(&path, Rw::Read, 0)),
            Err(FloorError::Params(_))
        ));
        let _ = std::fs::remove_file(&path);
    }
}
