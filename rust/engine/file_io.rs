//! A worker's commands in flight to file namespaces: Read, Write and Flush
//! checked by `cmd::io::start`, submitted to io_uring (or the thread pool)
//! during a pass, and completed when the kernel completes them. Each one
//! holds its CQ slot (reserved at fetch, so flow control still holds), the
//! guest memory snapshot its buffers were translated against (so an unmap
//! meanwhile cannot free what the kernel writes into) and the generation it
//! was fetched in (so a reset drops its completion).

use std::sync::Arc;

use super::faults::{self, Action};
use super::trace::Fetched;
use super::{Queues, ERROR_RING};
use crate::aio::{self, Aio, Completion, IoPath, Request};
use crate::cmd::io::{self, Failure, FileKind, FileOp, Namespace, Slots};
use crate::cmd::segment::{Segment, Target};
use crate::mem::MemoryMap;
use crate::spec::{Cqe, Status};
use crate::waker::Waker;

/// Requests one worker keeps in flight at most; past it the worker stops
/// fetching until some complete (the host's queues hold the rest).
pub(super) const MAX_INFLIGHT: usize = 1024;

/// One command in flight.
struct Slot {
    gen: u64,
    qid: u16,
    cqid: u16,
    cid: u16,
    op: FileOp,
    /// The namespace, kept alive (and its file open) until completion
    /// even if it is removed meanwhile.
    ns: Option<Arc<Namespace>>,
    iov: Vec<libc::iovec>,
    /// Keeps the regions `iov` points into mapped until completion.
    mem: Option<Arc<MemoryMap>>,
    fd: i32,
    flags: i32,
    /// The trace's record of the fetch, when tracing.
    fetch: Option<Fetched>,
    /// A fault rule's action on this command, applied as it completes.
    fault: Option<Action>,
}

/// A worker's asynchronous file I/O.
pub(super) struct FileIo {
    uring: Option<Aio>,
    threads: Option<Aio>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Commands submitted and not completed.
    pub(super) inflight: usize,
    done: Vec<Completion>,
    /// Reused between reaps: no allocation per pass.
    finished: Vec<Finished>,
}

// SAFETY: the raw iovec pointers name guest memory kept mapped by each
// slot's `mem`; FileIo is only used under its worker's queue lock.
unsafe impl Send for FileIo {}

impl FileIo {
    /// The I/O for `namespaces` (None when none is a file), with each
    /// path's completion eventfd watched by `waker`.
    pub(super) fn new(namespaces: &Slots, waker: &Waker) -> Option<FileIo> {
        let paths: Vec<IoPath> = namespaces
            .iter()
            .flatten()
            .filter_map(|ns| ns.backend.as_file().map(|f| f.io_path()))
            // An inline namespace hands the excess of a deep pass to
            // io_uring (see worker::INLINE_PASS), or to the pool without it.
            .map(|p| match p {
                IoPath::Inline if aio::choose(aio::Choice::IoUring, true).is_ok() => {
                    IoPath::IoUring
                }
                IoPath::Inline => IoPath::Threads,
                p => p,
            })
            .collect();
        if paths.is_empty() {
            return None;
        }
        let make = |p: IoPath| {
            if !paths.contains(&p) {
                return None;
            }
            // io_uring can fail here even after a good probe (a memlock
            // limit, too many rings): the pool serves then.
            let a = Aio::new(p, MAX_INFLIGHT as u32)
                .or_else(|_| Aio::new(IoPath::Threads, MAX_INFLIGHT as u32))
                .ok()?;
            waker.watch_raw(a.notifier()).ok()?;
            Some(a)
        };
        Some(FileIo {
            uring: make(IoPath::IoUring),
            threads: make(IoPath::Threads),
            slots: Vec::new(),
            free: Vec::new(),
            inflight: 0,
            done: Vec::new(),
            finished: Vec::new(),
        })
    }

    /// True when no more commands should be fetched this pass.
    #[inline]
    pub(super) fn full(&self) -> bool {
        self.inflight >= MAX_INFLIGHT
    }

    /// Starts `op` for command `cid` of SQ `qid`, its buffers in `segs`.
    /// Err: the command could not be started (no I/O path): complete it now.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin(
        &mut self,
        namespaces: &Slots,
        mem: &Arc<MemoryMap>,
        segs: &[Segment],
        op: FileOp,
        gen: u64,
        qid: u16,
        cqid: u16,
        cid: u16,
        fetch: Option<Fetched>,
        fault: Option<Action>,
    ) -> Result<(), Failure> {
        let internal = || Failure {
            status: Status::INTERNAL_ERROR,
            param_loc: 0,
            lba: op.slba,
            nsid: op.ns as u32 + 1,
        };
        let ns = namespaces
            .get(op.ns)
            .and_then(Option::as_ref)
            .ok_or_else(internal)?;
        let file = ns.backend.as_file().ok_or_else(internal)?;
        let aio = match file.io_path() {
            IoPath::IoUring | IoPath::Inline => self.uring.as_mut().or(self.threads.as_mut()),
            IoPath::Threads => self.threads.as_mut().or(self.uring.as_mut()),
        }
        .ok_or_else(internal)?;
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    qid: 0,
                    cqid: 0,
                    cid: 0,
                    op,
                    ns: None,
                    iov: Vec::new(),
                    mem: None,
                    fd: -1,
                    flags: 0,
                    fetch: None,
                    fault: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.gen = gen;
        slot.qid = qid;
        slot.cqid = cqid;
        slot.cid = cid;
        slot.op = op;
        slot.fetch = fetch;
        slot.fault = fault;
        slot.iov.clear();
        for s in segs {
            if let Target::Host(p) = s.target {
                slot.iov.push(libc::iovec {
                    iov_base: p.cast(),
                    iov_len: s.len,
                });
            }
        }
        let (kind, fd) = match op.kind {
            FileKind::Read => (aio::Kind::Read, file.fd_for(&slot.iov)),
            FileKind::Write { fua } => (
                aio::Kind::Write {
                    flags: file.write_flags(fua),
                },
                file.fd_for(&slot.iov),
            ),
            FileKind::Flush => (aio::Kind::Datasync, file.sync_fd()),
        };
        slot.fd = fd;
        slot.flags = match kind {
            aio::Kind::Write { flags } => flags,
            _ => 0,
        };
        slot.mem = Some(Arc::clone(mem));
        // SAFETY: the iovecs name host memory translated against `mem`,
        // which the slot holds until the completion is reaped; the slot's
        // iov Vec is not touched until then (its heap buffer does not move
        // when `slots` grows); the namespace's fds live as long as the
        // namespace, which the slot holds until the completion is reaped.
        let queued = unsafe {
            aio.push(Request {
                fd,
                kind,
                offset: op.offset,
                iov: slot.iov.as_ptr(),
                iovcnt: slot.iov.len() as u32,
                tag: index as u64,
            })
        };
        if !queued {
            slot.mem = None;
            self.free.push(index as u32);
            return Err(internal());
        }
        file.ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ns.inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        slot.ns = Some(Arc::clone(ns));
        self.inflight += 1;
        Ok(())
    }

    /// Submits what the pass queued.
    pub(super) fn submit(&mut self) {
        for a in [self.uring.as_mut(), self.threads.as_mut()]
            .into_iter()
            .flatten()
        {
            a.submit();
        }
    }

    /// Blocks until something completes (stop drains with it).
    #[allow(dead_code)]
    pub(super) fn wait(&mut self) {
        for a in [self.uring.as_mut(), self.threads.as_mut()]
            .into_iter()
            .flatten()
        {
            a.wait();
        }
    }
}

/// What a finished command needs to post: its result, queue and CID.
struct Finished {
    gen: u64,
    qid: u16,
    cqid: u16,
    cid: u16,
    result: Result<u64, Failure>,
    fetch: Option<Fetched>,
    fault: Option<Action>,
}

/// Turns a completion into a command result; short transfers are finished
/// synchronously (rare: a file changed size under us, a signal).
fn finish(slot: &mut Slot, res: i32, q_smart: &mut io::Smart) -> Result<u64, Failure> {
    let op = slot.op;
    let nsid = op.ns as u32 + 1;
    let write = matches!(op.kind, FileKind::Write { .. });
    let file = slot.ns.as_deref().and_then(|ns| ns.backend.as_file());
    let fail = |errno: i32, smart: &mut io::Smart| {
        if let Some(f) = file {
            f.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(io::file_failure(errno, write, op.slba, nsid, smart))
    };
    if res < 0 {
        return fail(-res, q_smart);
    }
    if op.kind == FileKind::Flush {
        if let Some(ns) = slot.ns.as_deref() {
            ns.cache.flushed();
            // The Write Uncorrectable marks are durable with the data.
            if let Err(e) = ns.uncorrectable.flush() {
                return fail(e, q_smart);
            }
        }
    } else {
        let moved = res as u64;
        if moved < op.len {
            // Skip what moved, then move the rest.
            let mut skip = moved as usize;
            let mut rest = Vec::with_capacity(slot.iov.len());
            for v in &slot.iov {
                if skip >= v.iov_len {
                    skip -= v.iov_len;
                    continue;
                }
                rest.push(libc::iovec {
                    // SAFETY: skip < iov_len: inside the same buffer.
                    iov_base: unsafe { v.iov_base.cast::<u8>().add(skip) }.cast(),
                    iov_len: v.iov_len - skip,
                });
                skip = 0;
            }
            // SAFETY: the buffers are host memory kept mapped by slot.mem.
            let r =
                unsafe { aio::transfer_all(slot.fd, write, op.offset + moved, &rest, slot.flags) };
            if let Err(e) = r {
                return fail(e, q_smart);
            }
        }
        io::count(q_smart, !write, op.len);
        if let (FileKind::Write { fua }, Some(ns)) = (op.kind, slot.ns.as_deref()) {
            // Written: Write Uncorrectable's marks there go.
            io::rewritten(ns, op.slba, op.len >> ns.lba_shift(), fua, nsid, q_smart)?;
        }
    }
    Ok(0)
}

impl super::Shared {
    /// Reaps the worker's finished file commands and posts their
    /// completions. Returns how many finished.
    pub(super) fn reap_files(&self, q: &mut Queues) -> usize {
        let Some(f) = q.file.as_mut() else {
            return 0;
        };
        if f.inflight == 0 {
            return 0;
        }
        let mut done = std::mem::take(&mut f.done);
        for a in [f.uring.as_mut(), f.threads.as_mut()].into_iter().flatten() {
            a.reap(&mut done);
        }
        if done.is_empty() {
            f.done = done;
            return 0;
        }
        let n = done.len();
        let mut finished = std::mem::take(&mut f.finished);
        for c in done.drain(..) {
            let Some(slot) = f.slots.get_mut(c.tag as usize) else {
                continue;
            };
            let mut result = finish(slot, c.res, &mut q.smart);
            if let (Some(m), Err(f)) = (slot.mem.as_ref(), &result) {
                if f.status == Status::DATA_TRANSFER_ERROR.dnr() {
                    // EFAULT: the kernel could not reach a buffer. Guest
                    // memory that shrank is found (the region lost, for
                    // the pass's check) by touching the buffers.
                    for v in &slot.iov {
                        m.touch_guarded(v.iov_base.cast(), v.iov_len);
                    }
                }
            }
            if let (Some(m), Ok(_)) = (slot.mem.as_ref(), &result) {
                if m.lost()
                    && slot
                        .iov
                        .iter()
                        .any(|v| m.host_lost(v.iov_base.cast(), v.iov_len))
                {
                    // The kernel moved the data through zero pages the
                    // SIGBUS guard put where guest memory shrank.
                    result = Err(io::transfer_failure(slot.op.slba, slot.op.ns as u32 + 1));
                }
            }
            if let (Some(Action::Corrupt { offset, xor }), Ok(_)) = (slot.fault, &result) {
                // SAFETY: the iovecs name guest memory slot.mem keeps
                // mapped; the kernel is done writing them.
                unsafe { faults::corrupt_iovecs(&slot.iov, offset, xor) };
            }
            finished.push(Finished {
                gen: slot.gen,
                qid: slot.qid,
                cqid: slot.cqid,
                cid: slot.cid,
                result,
                fetch: slot.fetch.take(),
                fault: slot.fault.take(),
            });
            slot.mem = None;
            if let Some(ns) = slot.ns.take() {
                // After the last use of the file: a removal waiting for the
                // count to drop may close it.
                ns.inflight
                    .fetch_sub(1, std::sync::atomic::Ordering::Release);
            }
            f.free.push(c.tag as u32);
            f.inflight -= 1;
        }
        f.done = done;
        let gen = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let mem = self.mem.snapshot();
        let mut failed = false;
        for d in finished.drain(..) {
            if d.gen != gen {
                // Fetched before a reset: the queues it belonged to are gone.
                continue;
            }
            let Some(sq) = q.sqs[usize::from(d.qid)].as_mut() else {
                // Deleted meanwhile (a delete that gave up waiting): give
                // the CQ slot back, post nothing.
                if let Some(cq) = q.cqs[usize::from(d.cqid)].as_mut() {
                    cq.reserved = cq.reserved.saturating_sub(1);
                }
                continue;
            };
            sq.inflight = sq.inflight.saturating_sub(1);
            let sqhd = sq.head as u16;
            if q.cqs[usize::from(d.cqid)].is_none() {
                continue;
            }
            let (status, dw0) = record(&mut q.stats, &mut q.errors, d.qid, d.cid, d.result);
            if let Some(a) = d.fault {
                let ids = (d.qid, d.cqid, d.cid);
                if Self::after_run(&mut q.faults, a, gen, ids, (status, dw0), d.fetch) {
                    continue;
                }
            }
            if let Some(f) = d.fetch {
                self.trace.completed(f, status.field(), dw0);
            }
            let cqe = Cqe::with_result(d.qid, d.cid, status, dw0);
            if cq_post(q, &mem, d.cqid, cqe, sqhd) {
                failed = true;
            }
        }
        if let Some(f) = q.file.as_mut() {
            f.finished = finished;
        }
        if mem.lost() {
            failed |= self.queues_lost(&mem, q, self.doorbells.shadow());
            self.mem.refresh();
        }
        if failed {
            self.fatal.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        n
    }
}

/// Counts a command's result (the error ring for a failure) and returns its
/// status and DW0.
pub(super) fn record(
    stats: &mut super::Stats,
    errors: &mut std::collections::VecDeque<super::ErrorEntry>,
    qid: u16,
    cid: u16,
    r: Result<u64, Failure>,
) -> (Status, u64) {
    stats.io_commands += 1;
    match r {
        Ok(dw0) => (Status::SUCCESS, dw0),
        Err(failure) => {
            stats.io_errors += 1;
            if errors.len() == ERROR_RING {
                errors.pop_front();
            }
            errors.push_back(super::ErrorEntry {
                sqid: qid,
                cid,
                failure,
            });
            (failure.status, 0)
        }
    }
}

/// Posts to CQ `cqid`; true when the post failed (CSTS.CFS).
fn cq_post(q: &mut Queues, mem: &MemoryMap, cqid: u16, cqe: Cqe, sqhd: u16) -> bool {
    let Some(cq) = q.cqs[usize::from(cqid)].as_mut() else {
        return false;
    };
    if cq.post(mem, cqe, sqhd).is_err() {
        q.stats.cqe_post_errors += 1;
        return true;
    }
    false
}
