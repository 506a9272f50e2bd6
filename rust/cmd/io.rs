//! NVM I/O commands (NVM Command Set 2.0): the dispatcher, the data pointer
//! (PRP or SGL), and Read, Write, Flush. The other commands are in `nvm.rs`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::prp;
use super::segment::{self, Segment, Target};
use super::{nvm, sgl};
use crate::backend::Backend;
use crate::mem::{MemError, MemoryMap};
use crate::spec::opcode::io as op;
use crate::spec::{Sqe, Status};

/// One namespace: its storage and current LBA format.
pub struct Namespace {
    pub backend: Backend,
    /// log2 of the LBA data size (changed only by Format NVM, with every
    /// worker stopped).
    lba_shift: AtomicU32,
    size_bytes: u64,
    /// Number of LBAs (NSZE).
    lbas: AtomicU64,
}

impl Namespace {
    /// A namespace of `size_bytes` formatted with `lba_size`-byte LBAs.
    pub fn new(backend: Backend, size_bytes: u64, lba_size: u32) -> Self {
        Namespace {
            backend,
            lba_shift: AtomicU32::new(lba_size.trailing_zeros()),
            size_bytes,
            lbas: AtomicU64::new(size_bytes >> lba_size.trailing_zeros()),
        }
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
    pub fn format(&self, lba_size: u32) {
        // SAFETY: the whole namespace, by construction in range.
        unsafe { self.backend.zero(0, self.size_bytes) };
        let shift = lba_size.trailing_zeros();
        self.lba_shift.store(shift, Ordering::Relaxed);
        self.lbas.store(self.size_bytes >> shift, Ordering::Relaxed);
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
    pub namespaces: &'a [Namespace],
    pub page_size: u64,
    /// Maximum data transfer in bytes; 0 for no limit.
    pub mdts_bytes: u64,
    /// Reused segment buffer: no allocation per command once warm.
    pub segs: &'a mut Vec<Segment>,
    /// Reused byte buffer for range lists (DSM, Copy) and for bouncing
    /// remote segments' data.
    pub scratch: &'a mut Vec<u8>,
    pub smart: &'a mut Smart,
}

/// SQE byte offsets of fields, for Parameter Error Location.
pub(super) mod loc {
    pub const OPCODE: u16 = 0;
    pub const PSDT: u16 = 1;
    pub const NSID: u16 = 4;
    pub const DPTR: u16 = 24;
    pub const CDW10: u16 = 40;
    pub const CDW12: u16 = 48;
}

pub(super) fn fail(status: Status, param_loc: u16, lba: u64, nsid: u32) -> Failure {
    Failure {
        status,
        param_loc,
        lba,
        nsid,
    }
}

/// Executes an I/O command; Ok carries completion DW0.
#[inline]
pub fn execute(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u32, Failure> {
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
            let ns = namespace(ctx, nsid)?;
            ns.backend.flush();
            Ok(0)
        }
        op::COMPARE => nvm::compare(ctx, sqe),
        op::WRITE_ZEROES => nvm::write_zeroes(ctx, sqe),
        op::DATASET_MANAGEMENT => nvm::dataset_management(ctx, sqe),
        op::VERIFY => nvm::verify(ctx, sqe),
        op::COPY => nvm::copy(ctx, sqe),
        _ => Err(fail(Status::INVALID_OPCODE.dnr(), loc::OPCODE, 0, nsid)),
    }
}

pub(super) fn namespace<'a>(ctx: &IoContext<'a>, nsid: u32) -> Result<&'a Namespace, Failure> {
    nsid.checked_sub(1)
        .and_then(|i| ctx.namespaces.get(i as usize))
        .ok_or(fail(Status::INVALID_NAMESPACE.dnr(), loc::NSID, 0, nsid))
}

/// SLBA (CDW10-11) and NLB (CDW12 bits 15:0, 0's based, returned 1-based),
/// checked against the namespace.
pub(super) fn lba_range(ns: &Namespace, sqe: &Sqe) -> Result<(u64, u64), Failure> {
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
pub(super) fn data_pointer(
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
pub(super) fn read_buffer(ctx: &mut IoContext<'_>, sqe: &Sqe, len: usize) -> Result<(), Failure> {
    data_pointer(ctx, sqe, len as u64, false, 0)?;
    ctx.scratch.clear();
    // SAFETY: the segments were translated (readable) against ctx.mem,
    // alive for this call.
    unsafe { segment::gather(ctx.mem, ctx.segs, ctx.scratch) }
        .map_err(|_| transfer_failure(0, sqe.nsid()))
}

/// A transport failure while data moved: Data Transfer Error.
#[cold]
pub(super) fn transfer_failure(lba: u64, nsid: u32) -> Failure {
    fail(Status::DATA_TRANSFER_ERROR.dnr(), loc::DPTR, lba, nsid)
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
) -> Result<(), MemError> {
    if !ns.backend.transfers_data() {
        return Ok(());
    }
    buf.clear();
    buf.resize(len, 0);
    // SAFETY: buf holds len bytes; the caller's LBA range check keeps
    // off + len inside the namespace.
    unsafe { ns.backend.read(off, buf.as_mut_ptr(), len) };
    mem.remote_write(iova, buf)
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
fn rw(ctx: &mut IoContext<'_>, sqe: &Sqe, read: bool) -> Result<u32, Failure> {
    let (ns, mut off, len) = lba_transfer(ctx, sqe, read)?;
    let slba = off >> ns.lba_shift();
    if !read && ctx.segs.iter().any(Segment::is_remote) {
        // Every remote byte is fetched before any byte reaches the namespace.
        segment::fetch_remote(ctx.mem, ctx.segs, ctx.scratch)
            .map_err(|_| transfer_failure(slba, sqe.nsid()))?;
    }
    // Where the next remote segment's fetched bytes start in ctx.scratch.
    let mut fetched = 0usize;
    for s in ctx.segs.iter() {
        match s.target {
            // SAFETY: each segment was translated against the snapshot in
            // ctx.mem, which keeps its region mapped for this call; the LBA
            // range check above keeps off + len inside the namespace.
            Target::Host(p) => unsafe {
                if read {
                    ns.backend.read(off, p, s.len);
                } else {
                    ns.backend.write(off, p, s.len);
                }
            },
            Target::Remote(iova) if read => {
                bounce_out(ns, ctx.mem, off, iova, s.len, ctx.scratch)
                    .map_err(|_| transfer_failure(slba, sqe.nsid()))?;
            }
            Target::Remote(_) => {
                let piece = &ctx.scratch[fetched..fetched + s.len];
                // SAFETY: piece holds s.len bytes (fetch_remote appended
                // exactly the remote segments' lengths, in this order); the
                // range check keeps off + len inside the namespace.
                unsafe { ns.backend.write(off, piece.as_ptr(), s.len) };
                fetched += s.len;
            }
            // An SGL bit bucket: the host does not want those bytes.
            Target::BitBucket => {}
        }
        off += s.len as u64;
    }
    if read {
        ctx.smart.bytes_read += len;
        ctx.smart.host_read_commands += 1;
    } else {
        ctx.smart.bytes_written += len;
        ctx.smart.host_write_commands += 1;
    }
    Ok(0)
}
