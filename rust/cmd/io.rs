//! NVM I/O commands (NVM Command Set 2.0): the dispatcher, the data pointer
//! (PRP or SGL), and Read, Write, Flush. The other commands are in `nvm.rs`.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::prp;
use super::segment::{self, Segment, Target};
use super::{nvm, sgl};
use crate::backend::{Backend, Errno, VolatileCache};
use crate::mem::{MemError, MemoryMap};
use crate::spec::opcode::io as op;
use crate::spec::{Sqe, Status};

/// One namespace: its storage and current LBA format.
pub struct Namespace {
    pub backend: Backend,
    /// log2 of the LBA data size (changed only by Format NVM, with every
    /// worker stopped).
    lba_shift: AtomicU32,
    /// Bytes (changed by a resize, with every worker held off).
    size_bytes: AtomicU64,
    /// Number of LBAs (NSZE).
    lbas: AtomicU64,
    /// Unflushed writes, tracked for a power loss (fault injection).
    pub cache: VolatileCache,
    /// Metadata and protection information (`pi/`): format and store.
    pub meta: crate::pi::Meta,
    /// The zones of a zoned namespace (`crate::zns`); None: conventional.
    pub zones: Option<Box<crate::zns::Zones>>,
    /// Why the namespace is inactive on this controller (`INACTIVE_*`
    /// bits; 0: active). Every command to an inactive namespace fails
    /// with Invalid Field in Command.
    inactive: AtomicU8,
    /// Commands in flight to its file on the asynchronous path: a resize
    /// or a removal waits for them.
    pub inflight: AtomicU32,
    /// Blocks Write Uncorrectable marked (`crate::nsmgmt::uncorrectable`).
    pub uncorrectable: crate::nsmgmt::Uncorrectable,
}

/// Inactive: its I/O command set is not enabled (CC.CSS).
pub const INACTIVE_CSS: u8 = 1;
/// Inactive: not attached to this controller (Namespace Attachment).
pub const INACTIVE_DETACHED: u8 = 2;
/// Held off: a sanitize runs. Commands other than Flush fail with
/// Sanitize In Progress (rather than Invalid Field) when this is the only
/// reason.
pub const INACTIVE_SANITIZE: u8 = 4;

/// The namespace table as commands see it: slot `i` holds NSID `i + 1`
/// (None: unallocated); its length is NN.
pub type Slots = [Option<std::sync::Arc<Namespace>>];

impl Namespace {
    /// A namespace of `size_bytes` formatted with `lba_size`-byte LBAs.
    pub fn new(backend: Backend, size_bytes: u64, lba_size: u32) -> Self {
        let size_bytes = backend.size(size_bytes);
        Namespace {
            backend,
            lba_shift: AtomicU32::new(lba_size.trailing_zeros()),
            size_bytes: AtomicU64::new(size_bytes),
            lbas: AtomicU64::new(size_bytes >> lba_size.trailing_zeros()),
            cache: VolatileCache::default(),
            meta: crate::pi::Meta::default(),
            zones: None,
            inactive: AtomicU8::new(0),
            inflight: AtomicU32::new(0),
            uncorrectable: crate::nsmgmt::Uncorrectable::default(),
        }
    }

    /// The namespace with metadata of format `fmt` (checked against its
    /// LBA size); Err says what to change.
    pub fn with_metadata(self, fmt: crate::pi::Format) -> Result<Self, String> {
        fmt.validate(1 << self.lba_shift())?;
        let store = crate::pi::Store::open(fmt, self.lbas(), &self.backend)?;
        self.meta.set(fmt, store);
        Ok(self)
    }

    /// log2 of the LBA data size.
    #[inline]
    pub fn lba_shift(&self) -> u32 {
        self.lba_shift.load(Ordering::Relaxed)
    }

    /// Number of LBAs.
    #[inline]
    pub fn lbas(&self) -> u64 {
        self.lbas.load(Ordering::Relaxed)
    }

    /// Format NVM: new LBA size, every block zero. The caller keeps every
    /// worker out of this namespace meanwhile.
    pub fn format(&self, lba_size: u32) -> Result<(), Errno> {
        let size = self.size_bytes();
        // SAFETY: the whole namespace, by construction in range.
        unsafe { self.backend.zero(0, size)? };
        self.uncorrectable.clear_all();
        // Format is durable: nothing to roll back to.
        self.cache.flushed();
        if let Backend::Custom(c) = &self.backend {
            c.set_lba_size(lba_size);
        }
        let shift = lba_size.trailing_zeros();
        self.lba_shift.store(shift, Ordering::Relaxed);
        self.lbas.store(size >> shift, Ordering::Relaxed);
        Ok(())
    }

    /// The size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// A new size (a multiple of the LBA size): NSZE follows. The caller
    /// holds every worker off and has resized the storage.
    pub fn set_size(&self, size: u64) {
        self.size_bytes.store(size, Ordering::Relaxed);
        self.lbas.store(size >> self.lba_shift(), Ordering::Relaxed);
    }

    /// True when commands to it fail with Invalid Field (inactive NSID).
    #[inline]
    pub fn inactive(&self) -> bool {
        // Relaxed: changed by the control plane, which then waits a pass
        // of every worker (`Engine::grace`) before it reports the change.
        self.inactive.load(Ordering::Relaxed) != 0
    }

    /// Sets (`on`) or clears one `INACTIVE_*` reason; returns the reasons
    /// before.
    pub fn set_inactive(&self, reason: u8, on: bool) -> u8 {
        if on {
            self.inactive.fetch_or(reason, Ordering::Relaxed)
        } else {
            self.inactive.fetch_and(!reason, Ordering::Relaxed)
        }
    }

    /// The `INACTIVE_*` reasons in force.
    pub fn inactive_reasons(&self) -> u8 {
        self.inactive.load(Ordering::Relaxed)
    }

    /// Before `len` bytes at byte `off` change: keeps their pre-image while
    /// a power loss is tracked (one relaxed load otherwise). `fua`: the
    /// write is durable when it completes.
    #[inline]
    pub fn will_write(&self, off: u64, len: u64, fua: bool) {
        if self.cache.tracking() {
            self.cache
                .will_write(&self.backend, off, len, 1 << self.lba_shift(), fua);
        }
    }

    /// Flushes the backend; what was written is durable after it (and a
    /// zoned namespace's write pointers with it).
    pub fn flush(&self) -> Result<(), Errno> {
        self.backend.flush()?;
        // Write Uncorrectable's marks are durable with the data.
        self.uncorrectable.flush()?;
        if let Some(s) = self.meta.store() {
            s.flush()?;
        }
        self.meta.flushed();
        self.cache.flushed();
        if let Some(z) = &self.zones {
            z.durable_point()?;
        }
        Ok(())
    }
}

/// SMART / Health counters kept by the core (NVMe Base 2.0, Figure 207).
#[derive(Clone, Copy, Debug, Default)]
pub struct Smart {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub host_read_commands: u64,
    pub host_write_commands: u64,
    pub media_errors: u64,
}

/// What a failed command tells the Error Information log page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: Status,
    /// Parameter Error Location: byte offset in the SQE of the field at fault.
    pub param_loc: u16,
    pub lba: u64,
    pub nsid: u32,
}

/// What a command needs besides the SQE.
pub struct IoContext<'a> {
    pub mem: &'a MemoryMap,
    pub namespaces: &'a Slots,
    pub page_size: u64,
    /// Maximum data transfer in bytes; 0 for no limit.
    pub mdts_bytes: u64,
    /// Reused segment buffer: no allocation per command once warm.
    pub segs: &'a mut Vec<Segment>,
    /// Reused byte buffer for range lists (DSM, Copy) and for bouncing
    /// remote segments' data.
    pub scratch: &'a mut Vec<u8>,
    pub smart: &'a mut Smart,
    /// [`start`] hands Read, Write and Flush of inline file namespaces to
    /// the asynchronous path too (the worker has served its share of them
    /// synchronously this pass).
    pub offload_inline: bool,
    /// A fault rule's `corrupt-pi` on this Read: the PI field and XOR.
    pub corrupt_pi: Option<(crate::pi::tuple::Field, u8)>,
}

/// SQE byte offsets of fields, for Parameter Error Location.
pub(crate) mod loc {
    pub const OPCODE: u16 = 0;
    pub const PSDT: u16 = 1;
    pub const NSID: u16 = 4;
    pub const MPTR: u16 = 16;
    pub const DPTR: u16 = 24;
    pub const CDW10: u16 = 40;
    pub const CDW12: u16 = 48;
}

pub(crate) fn fail(status: Status, param_loc: u16, lba: u64, nsid: u32) -> Failure {
    Failure {
        status,
        param_loc,
        lba,
        nsid,
    }
}

/// Executes an I/O command; Ok carries completion DW0 (bits 31:0) and DW1
/// (bits 63:32, a Zone Append's ALBA).
#[inline]
pub fn execute(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    if sqe.fuse() != 0 {
        // Fused operations are not supported (ONCS bit 1 clear).
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::OPCODE, 0, nsid));
    }
    match sqe.opcode() {
        op::READ | op::WRITE => rw(ctx, sqe, sqe.opcode() == op::READ),
        op::FLUSH => {
            // VWC bits 2:1 = 10b: broadcast flush (FFFFFFFFh) is not
            // supported, so it is an invalid namespace like any other.
            // Flush is the one I/O command a sanitize lets through.
            let ns = namespace_held(ctx, nsid, INACTIVE_SANITIZE)?;
            ns.flush()
                .map_err(|e| file_failure(e, true, 0, nsid, ctx.smart))?;
            Ok(0)
        }
        op::WRITE_UNCORRECTABLE => nvm::write_uncorrectable(ctx, sqe),
        op::COMPARE => nvm::compare(ctx, sqe),
        op::WRITE_ZEROES => nvm::write_zeroes(ctx, sqe),
        op::DATASET_MANAGEMENT => nvm::dataset_management(ctx, sqe),
        op::VERIFY => nvm::verify(ctx, sqe),
        op::COPY => nvm::copy(ctx, sqe),
        op::ZONE_APPEND => crate::zns::io::append(ctx, sqe),
        op::ZONE_MGMT_SEND => crate::zns::mgmt::send(ctx, sqe),
        op::ZONE_MGMT_RECV => crate::zns::mgmt::receive(ctx, sqe),
        _ => Err(fail(Status::INVALID_OPCODE.dnr(), loc::OPCODE, 0, nsid)),
    }
}

/// The namespace NSID `nsid` names, if active. Base 2.0 3.2.1.5: an
/// invalid NSID (0, above NN, FFFFFFFFh) is Invalid Namespace or Format; a
/// valid one that is inactive (unallocated, not attached, or of a command
/// set CC.CSS leaves disabled) is Invalid Field in Command.
#[inline]
pub(crate) fn namespace<'a>(ctx: &IoContext<'a>, nsid: u32) -> Result<&'a Namespace, Failure> {
    let slot = nsid
        .checked_sub(1)
        .and_then(|i| ctx.namespaces.get(i as usize))
        .ok_or(fail(Status::INVALID_NAMESPACE.dnr(), loc::NSID, 0, nsid))?;
    match slot.as_deref() {
        Some(ns) if !ns.inactive() => Ok(ns),
        other => Err(inactive(other, nsid)),
    }
}

/// [`namespace`], letting through a namespace held off only for the
/// `INACTIVE_*` reasons in `allowed`.
pub(crate) fn namespace_held<'a>(
    ctx: &IoContext<'a>,
    nsid: u32,
    allowed: u8,
) -> Result<&'a Namespace, Failure> {
    match namespace(ctx, nsid) {
        Err(f) if f.status == Status::SANITIZE_IN_PROGRESS => {
            let ns = ctx.namespaces[(nsid - 1) as usize].as_deref();
            match ns {
                Some(ns) if ns.inactive_reasons() & !allowed == 0 => Ok(ns),
                other => Err(inactive(other, nsid)),
            }
        }
        r => r,
    }
}

/// Why a command cannot reach an inactive (or held off) NSID.
#[cold]
fn inactive(ns: Option<&Namespace>, nsid: u32) -> Failure {
    match ns {
        Some(ns) if ns.inactive_reasons() == INACTIVE_SANITIZE => {
            fail(Status::SANITIZE_IN_PROGRESS, loc::OPCODE, 0, nsid)
        }
        _ => fail(Status::INVALID_FIELD.dnr(), loc::NSID, 0, nsid),
    }
}

/// SLBA (CDW10-11) and NLB (CDW12 bits 15:0, 0's based, returned 1-based),
/// checked against the namespace.
pub(crate) fn lba_range(ns: &Namespace, sqe: &Sqe) -> Result<(u64, u64), Failure> {
    let slba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
    let nlb = u64::from(sqe.cdw(12) & 0xffff) + 1;
    match slba.checked_add(nlb) {
        Some(end) if end <= ns.lbas() => Ok((slba, nlb)),
        _ => Err(fail(
            Status::LBA_OUT_OF_RANGE.dnr(),
            loc::CDW10,
            slba,
            sqe.nsid(),
        )),
    }
}

/// Fills `ctx.segs` from the command's data pointer (PRPs or an SGL) for
/// `len` bytes; `write` when the device writes guest memory.
pub(crate) fn data_pointer(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    len: u64,
    write: bool,
    lba: u64,
) -> Result<(), Failure> {
    let r = match sqe.psdt() {
        0 => prp::walk(
            ctx.mem,
            sqe.prp1(),
            sqe.prp2(),
            len,
            ctx.page_size,
            write,
            ctx.segs,
        )
        .map_err(|e| e.status()),
        // 01b: SGL with MPTR a contiguous buffer; 10b: MPTR an SGL. Without
        // metadata the two are the same for the data.
        1 | 2 => {
            let raw = sqe.to_bytes();
            let mut sgl1 = [0u8; 16];
            sgl1.copy_from_slice(&raw[24..40]);
            sgl::walk(ctx.mem, &sgl1, len, write, ctx.segs).map_err(|e| e.status())
        }
        _ => {
            return Err(fail(
                Status::INVALID_FIELD.dnr(),
                loc::PSDT,
                lba,
                sqe.nsid(),
            ))
        }
    };
    r.map_err(|status| fail(status, loc::DPTR, lba, sqe.nsid()))
}

/// Copies the command's data buffer (host to device) into `ctx.scratch`.
pub(crate) fn read_buffer(ctx: &mut IoContext<'_>, sqe: &Sqe, len: usize) -> Result<(), Failure> {
    data_pointer(ctx, sqe, len as u64, false, 0)?;
    ctx.scratch.clear();
    // SAFETY: the segments were translated (readable) against ctx.mem,
    // alive for this call.
    unsafe { segment::gather(ctx.mem, ctx.segs, ctx.scratch) }
        .map_err(|_| transfer_failure(0, sqe.nsid()))?;
    if ctx.mem.lost() {
        // Zero pages where guest memory shrank: not a range list to act on.
        return Err(transfer_failure(0, sqe.nsid()));
    }
    Ok(())
}

/// A transport failure while data moved: Data Transfer Error.
#[cold]
pub(crate) fn transfer_failure(lba: u64, nsid: u32) -> Failure {
    fail(Status::DATA_TRANSFER_ERROR.dnr(), loc::DPTR, lba, nsid)
}

/// An error from the backing file, as QEMU's nvme_aio_err maps it: EIO is
/// a media error (Unrecovered Read Error on a read, Write Fault on a write,
/// counted in SMART), ENOSPC is Capacity Exceeded (DNR: retrying cannot
/// help), a write to a read-only file is Namespace Is Write Protected, and
/// anything else is Internal Error. EFAULT is the guest's buffer, not the
/// file: host memory the kernel could not reach (guest memory that shrank
/// under the device), a Data Transfer Error.
#[cold]
pub fn file_failure(errno: Errno, write: bool, lba: u64, nsid: u32, smart: &mut Smart) -> Failure {
    let status = match errno {
        libc::EIO | libc::ENXIO | libc::EILSEQ => {
            smart.media_errors += 1;
            if write {
                Status::WRITE_FAULT
            } else {
                Status::UNRECOVERED_READ_ERROR
            }
        }
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => Status::CAPACITY_EXCEEDED.dnr(),
        libc::EFAULT => Status::DATA_TRANSFER_ERROR.dnr(),
        libc::EROFS | libc::EBADF if write => Status::NAMESPACE_WRITE_PROTECTED.dnr(),
        _ => Status::INTERNAL_ERROR,
    };
    fail(status, loc::DPTR, lba, nsid)
}

/// A write to a write-protected (read-only) namespace.
#[inline]
pub(crate) fn writable(ns: &Namespace, lba: u64, nsid: u32) -> Result<(), Failure> {
    if ns.backend.readonly() {
        return Err(fail(
            Status::NAMESPACE_WRITE_PROTECTED.dnr(),
            loc::NSID,
            lba,
            nsid,
        ));
    }
    Ok(())
}

/// A read of `[slba, slba + nlb)` (Read, Compare, Verify, a Copy source):
/// Unrecovered Read Error at the first block Write Uncorrectable marked.
/// One load when nothing is marked.
#[inline]
pub(crate) fn unmarked(
    ns: &Namespace,
    slba: u64,
    nlb: u64,
    nsid: u32,
    smart: &mut Smart,
) -> Result<(), Failure> {
    if !ns.uncorrectable.any() {
        return Ok(());
    }
    marked_read(ns, slba, nlb, nsid, smart)
}

#[cold]
fn marked_read(
    ns: &Namespace,
    slba: u64,
    nlb: u64,
    nsid: u32,
    smart: &mut Smart,
) -> Result<(), Failure> {
    match ns.uncorrectable.first_marked(slba, nlb) {
        // A media error, counted in SMART as one; reading again cannot
        // help: Do Not Retry.
        Some(lba) => {
            smart.media_errors += 1;
            Err(fail(
                Status::UNRECOVERED_READ_ERROR.dnr(),
                loc::CDW10,
                lba,
                nsid,
            ))
        }
        None => Ok(()),
    }
}

/// `[slba, slba + nlb)` was written (Write, Write Zeroes, deallocation, a
/// Copy destination, Zone Append): Write Uncorrectable's marks there go,
/// durably with `fua` or the volatile write cache off. One load when
/// nothing is marked.
#[inline]
pub(crate) fn rewritten(
    ns: &Namespace,
    slba: u64,
    nlb: u64,
    fua: bool,
    nsid: u32,
    smart: &mut Smart,
) -> Result<(), Failure> {
    if !ns.uncorrectable.any() {
        return Ok(());
    }
    unmark(ns, slba, nlb, fua, nsid, smart)
}

#[cold]
fn unmark(
    ns: &Namespace,
    slba: u64,
    nlb: u64,
    fua: bool,
    nsid: u32,
    smart: &mut Smart,
) -> Result<(), Failure> {
    let durable = fua || !ns.cache.write_cache();
    ns.uncorrectable
        .clear(slba, nlb, durable)
        .map_err(|e| file_failure(e, true, slba, nsid, smart))
}

/// Device-to-host through a remote segment: namespace bytes bounced
/// through `buf` into the client's memory. The null backend moves no data,
/// as it leaves fd-backed memory untouched.
#[cold]
fn bounce_out(
    ns: &Namespace,
    mem: &MemoryMap,
    off: u64,
    iova: u64,
    len: usize,
    buf: &mut Vec<u8>,
) -> Result<(), Bounce> {
    if !ns.backend.transfers_data() {
        return Ok(());
    }
    buf.clear();
    buf.resize(len, 0);
    // SAFETY: buf holds len bytes; the caller's LBA range check keeps
    // off + len inside the namespace.
    unsafe { ns.backend.read(off, buf.as_mut_ptr(), len) }.map_err(Bounce::File)?;
    mem.remote_write(iova, buf)
        .map_err(|_: MemError| Bounce::Mem)
}

/// Why a bounced read failed.
enum Bounce {
    File(Errno),
    Mem,
}

/// The common part of a command that moves LBAs through a data pointer
/// (Read, Write, Compare): namespace, range, MDTS, then the data pointer
/// walked into `ctx.segs`. Returns the namespace, the byte offset and length.
#[inline]
pub(super) fn lba_transfer<'a>(
    ctx: &mut IoContext<'a>,
    sqe: &Sqe,
    device_writes: bool,
) -> Result<(&'a Namespace, u64, u64), Failure> {
    let ns = namespace(ctx, sqe.nsid())?;
    let (slba, nlb) = lba_range(ns, sqe)?;
    let shift = ns.lba_shift();
    // nlb <= 65536 and lba_shift <= 12: no overflow.
    let len = nlb << shift;
    if ctx.mdts_bytes != 0 && len > ctx.mdts_bytes {
        return Err(fail(
            Status::INVALID_FIELD.dnr(),
            loc::CDW12,
            slba,
            sqe.nsid(),
        ));
    }
    data_pointer(ctx, sqe, len, device_writes, slba)?;
    Ok((ns, slba << shift, len))
}

#[inline]
fn rw(ctx: &mut IoContext<'_>, sqe: &Sqe, read: bool) -> Result<u64, Failure> {
    let ns = namespace(ctx, sqe.nsid())?;
    if ns.meta.active() {
        return super::protect::rw(ctx, sqe, ns, read).map(u64::from);
    }
    if !read {
        writable(ns, 0, sqe.nsid())?;
    }
    let (ns, off, len) = lba_transfer(ctx, sqe, read)?;
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    if read && ns.uncorrectable.any() {
        let shift = ns.lba_shift();
        unmarked(ns, off >> shift, len >> shift, sqe.nsid(), ctx.smart)?;
    }
    if let Some(z) = &ns.zones {
        crate::zns::io::rw(ctx, sqe, ns, z, off, len, read)?;
    } else {
        if !read {
            ns.will_write(off, len, fua);
        }
        rw_segments(ctx, sqe, ns, off, read)?;
        if !read && fua {
            // FUA on the synchronous path: durable before the completion.
            ns.backend
                .flush()
                .map_err(|e| file_failure(e, true, off >> ns.lba_shift(), sqe.nsid(), ctx.smart))?;
        }
        count(ctx.smart, read, len);
    }
    if !read && ns.uncorrectable.any() {
        let shift = ns.lba_shift();
        rewritten(ns, off >> shift, len >> shift, fua, sqe.nsid(), ctx.smart)?;
    }
    Ok(0)
}

/// SMART counters of a completed Read or Write of `len` bytes.
#[inline]
pub fn count(smart: &mut Smart, read: bool, len: u64) {
    if read {
        smart.bytes_read += len;
        smart.host_read_commands += 1;
    } else {
        smart.bytes_written += len;
        smart.host_write_commands += 1;
    }
}

/// Moves the data of a Read or Write between the namespace at byte `off`
/// and the segments in `ctx.segs`, synchronously.
#[inline]
pub(crate) fn rw_segments(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    mut off: u64,
    read: bool,
) -> Result<(), Failure> {
    let slba = off >> ns.lba_shift();
    let nsid = sqe.nsid();
    if let Backend::Custom(c) = &ns.backend {
        if !ctx
            .segs
            .iter()
            .any(|s| matches!(s.target, Target::BitBucket))
        {
            return custom_rw(ctx, c, off, read)
                .map_err(|e| e.failure(!read, slba, nsid, ctx.smart));
        }
    }
    if !read && ctx.segs.iter().any(Segment::is_remote) {
        // Every remote byte is fetched before any byte reaches the namespace.
        segment::fetch_remote(ctx.mem, ctx.segs, ctx.scratch)
            .map_err(|_| transfer_failure(slba, nsid))?;
    }
    // Where the next remote segment's fetched bytes start in ctx.scratch.
    let mut fetched = 0usize;
    for s in ctx.segs.iter() {
        let r = match s.target {
            // SAFETY: each segment was translated against the snapshot in
            // ctx.mem, which keeps its region mapped for this call; the LBA
            // range check keeps off + len inside the namespace.
            Target::Host(p) => unsafe {
                if read {
                    ns.backend.read(off, p, s.len)
                } else {
                    ns.backend.write(off, p, s.len)
                }
            },
            Target::Remote(iova) if read => {
                match bounce_out(ns, ctx.mem, off, iova, s.len, ctx.scratch) {
                    Ok(()) => Ok(()),
                    Err(Bounce::File(e)) => Err(e),
                    Err(Bounce::Mem) => return Err(transfer_failure(slba, nsid)),
                }
            }
            Target::Remote(_) => {
                let piece = &ctx.scratch[fetched..fetched + s.len];
                fetched += s.len;
                // SAFETY: piece holds s.len bytes (fetch_remote appended
                // exactly the remote segments' lengths, in this order); the
                // range check keeps off + len inside the namespace.
                unsafe { ns.backend.write(off, piece.as_ptr(), s.len) }
            }
            // An SGL bit bucket: the host does not want those bytes.
            Target::BitBucket => Ok(()),
        };
        if let (Err(libc::EFAULT), Target::Host(p)) = (r, s.target) {
            // The kernel could not reach the buffer: guest memory that
            // shrank? Found (and the region lost) by touching it.
            ctx.mem.touch_guarded(p, s.len);
        }
        r.map_err(|e| file_failure(e, !read, slba, nsid, ctx.smart))?;
        off += s.len as u64;
    }
    Ok(())
}

/// Why a custom storage's transfer failed.
enum CustomFail {
    Storage(Errno),
    Mem,
}

impl CustomFail {
    fn failure(self, write: bool, slba: u64, nsid: u32, smart: &mut Smart) -> Failure {
        match self {
            CustomFail::Storage(e) => file_failure(e, write, slba, nsid, smart),
            CustomFail::Mem => transfer_failure(slba, nsid),
        }
    }
}

/// A Read or Write on a custom storage: one call for the whole command,
/// the data scattered to or gathered from the segments in `ctx.segs`.
#[cold]
fn custom_rw(
    ctx: &mut IoContext<'_>,
    c: &crate::backend::CustomBackend,
    off: u64,
    read: bool,
) -> Result<(), CustomFail> {
    let len: usize = ctx.segs.iter().map(|s| s.len).sum();
    let mut data = Vec::with_capacity(len);
    if read {
        c.read_into(off, len, &mut data)
            .map_err(CustomFail::Storage)?;
        let mut at = 0;
        for s in ctx.segs.iter() {
            let piece = &data[at..at + s.len];
            match s.target {
                // SAFETY: the segment was translated against ctx.mem's
                // snapshot, which keeps it mapped; it holds s.len bytes.
                Target::Host(p) => unsafe {
                    std::ptr::copy_nonoverlapping(piece.as_ptr(), p, s.len)
                },
                Target::Remote(iova) => ctx
                    .mem
                    .remote_write(iova, piece)
                    .map_err(|_: MemError| CustomFail::Mem)?,
                Target::BitBucket => {}
            }
            at += s.len;
        }
        return Ok(());
    }
    if ctx.segs.iter().any(Segment::is_remote) {
        segment::fetch_remote(ctx.mem, ctx.segs, ctx.scratch).map_err(|_| CustomFail::Mem)?;
    }
    let mut fetched = 0usize;
    for s in ctx.segs.iter() {
        match s.target {
            // SAFETY: as above, for reads of s.len bytes.
            Target::Host(p) => {
                data.extend_from_slice(unsafe { std::slice::from_raw_parts(p, s.len) })
            }
            Target::Remote(_) => {
                data.extend_from_slice(&ctx.scratch[fetched..fetched + s.len]);
                fetched += s.len;
            }
            Target::BitBucket => {}
        }
    }
    c.write_from(off, &data).map_err(CustomFail::Storage)
}

/// What [`start`] leaves to the worker: a transfer for the backing file to
/// run asynchronously, with its buffers in `ctx.segs` (host memory only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileOp {
    /// Index of the namespace (NSID - 1).
    pub ns: usize,
    pub kind: FileKind,
    /// Byte offset in the namespace.
    pub offset: u64,
    /// Bytes to move (0 for Flush).
    pub len: u64,
    pub slba: u64,
}

/// The asynchronous commands of a file namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Read,
    /// `fua`: Force Unit Access (CDW12 bit 30).
    Write {
        fua: bool,
    },
    Flush,
}

/// What [`start`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// Executed: completion DW0 and DW1 (see [`execute`]).
    Done(u64),
    /// To be submitted to the namespace's file.
    File(FileOp),
}

/// Executes an I/O command, or, for a Read, Write or Flush of a file
/// namespace whose data is all in host memory, checks it and returns the
/// transfer for the worker to run asynchronously (`ctx.segs` holds its
/// buffers).
#[inline]
pub fn start(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<Started, Failure> {
    let nsid = sqe.nsid();
    let opcode = sqe.opcode();
    let is_file = nsid
        .checked_sub(1)
        .and_then(|i| ctx.namespaces.get(i as usize))
        .and_then(Option::as_deref)
        .is_some_and(|ns| {
            // Metadata moves beside the data, and a zoned namespace's write
            // reserves its blocks and releases them in one call: both
            // synchronously. An inactive one fails in `execute`.
            !ns.inactive()
                && !ns.meta.active()
                && ns.zones.is_none()
                && ns.backend.as_file().is_some_and(|f| {
                    ctx.offload_inline || f.io_path() != crate::aio::IoPath::Inline
                })
        });
    if !is_file || sqe.fuse() != 0 || !matches!(opcode, op::READ | op::WRITE | op::FLUSH) {
        return execute(ctx, sqe).map(Started::Done);
    }
    let index = (nsid - 1) as usize;
    if opcode == op::FLUSH {
        return Ok(Started::File(FileOp {
            ns: index,
            kind: FileKind::Flush,
            offset: 0,
            len: 0,
            slba: 0,
        }));
    }
    let read = opcode == op::READ;
    if !read {
        writable(namespace(ctx, nsid)?, 0, nsid)?;
    }
    let (ns, off, len) = lba_transfer(ctx, sqe, read)?;
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    if read && ns.uncorrectable.any() {
        let shift = ns.lba_shift();
        unmarked(ns, off >> shift, len >> shift, nsid, ctx.smart)?;
    }
    if !read {
        ns.will_write(off, len, fua);
    }
    if ctx
        .segs
        .iter()
        .any(|s| !matches!(s.target, Target::Host(_)))
    {
        // Remote segments and bit buckets take the synchronous path.
        rw_segments(ctx, sqe, ns, off, read)?;
        count(ctx.smart, read, len);
        if !read {
            let shift = ns.lba_shift();
            rewritten(ns, off >> shift, len >> shift, fua, nsid, ctx.smart)?;
        }
        return Ok(Started::Done(0));
    }
    let kind = if read {
        FileKind::Read
    } else {
        FileKind::Write { fua }
    };
    Ok(Started::File(FileOp {
        ns: index,
        kind,
        offset: off,
        len,
        slba: off >> ns.lba_shift(),
    }))
}
