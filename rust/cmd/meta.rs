//! Metadata transfer (NVMe Base 2.0 4.1.2/4.3.2 and NVM Command Set 1.0
//! 2.1.5): the Metadata Pointer (MPTR, SQE bytes 23:16) of a namespace
//! with separate metadata, and the byte views of a command's data that
//! the guards are computed over.
//!
//! | PSDT | MPTR |
//! |---|---|
//! | 00b (PRPs) | one contiguous buffer, dword aligned |
//! | 01b (SGL) | one contiguous buffer, byte aligned (SGLS bit 17) |
//! | 10b (SGL) | one qword-aligned SGL descriptor (SGLS bit 19), walked like a data SGL |

use super::io::{fail, loc, transfer_failure, Failure, IoContext, Namespace};
use super::segment::{Segment, Target};
use super::sgl::{self, SglError};
use crate::backend::{Backend, Errno};
use crate::mem::MemoryMap;
use crate::spec::{Sqe, Status};

/// The Metadata Pointer.
#[inline]
pub fn mptr(sqe: &Sqe) -> u64 {
    u64::from(sqe.dw[4]) | u64::from(sqe.dw[5]) << 32
}

/// Fills `out` with the guest memory of the command's metadata buffer of
/// `len` bytes; `write`: the device writes it (a Read).
pub fn metadata_pointer(
    mem: &MemoryMap,
    sqe: &Sqe,
    len: u64,
    write: bool,
    lba: u64,
    out: &mut Vec<Segment>,
) -> Result<(), Failure> {
    out.clear();
    let nsid = sqe.nsid();
    let at = mptr(sqe);
    let misaligned = |a: u64| fail(Status::INVALID_FIELD.dnr(), loc::MPTR, a, nsid);
    match sqe.psdt() {
        0 | 1 => {
            if sqe.psdt() == 0 && at & 3 != 0 {
                return Err(misaligned(lba));
            }
            if len == 0 {
                return Ok(());
            }
            Segment::push(mem, out, at, len, write)
                .map_err(|_| fail(Status::DATA_TRANSFER_ERROR.dnr(), loc::MPTR, lba, nsid))
        }
        2 => {
            if at & 7 != 0 {
                return Err(misaligned(lba));
            }
            let mut desc = [0u8; 16];
            mem.read(at, &mut desc)
                .map_err(|_| fail(Status::DATA_TRANSFER_ERROR.dnr(), loc::MPTR, lba, nsid))?;
            sgl::walk(mem, &desc, len, write, out).map_err(|e| {
                let status = match e {
                    SglError::LengthInvalid { .. } => Status::METADATA_SGL_LENGTH_INVALID.dnr(),
                    other => other.status(),
                };
                fail(status, loc::MPTR, lba, nsid)
            })
        }
        _ => Err(fail(Status::INVALID_FIELD.dnr(), loc::PSDT, lba, nsid)),
    }
}

/// True when every segment is fd-backed host memory (no bit bucket, no
/// remote piece): the data can be read in place.
#[inline]
pub fn all_host(segs: &[Segment]) -> bool {
    segs.iter().all(|s| matches!(s.target, Target::Host(_)))
}

/// The bytes of host segments, in order.
///
/// # Safety
/// Every segment is `Target::Host`, translated against a memory snapshot
/// the caller holds while the slices live. Guest memory may change under
/// them (another vCPU), which only changes the bytes read.
pub unsafe fn host_slices(segs: &[Segment], out: &mut Vec<&[u8]>) {
    out.clear();
    for s in segs {
        if let Target::Host(p) = s.target {
            // SAFETY: the caller's contract.
            out.push(unsafe { std::slice::from_raw_parts(p.cast_const(), s.len) });
        }
    }
}

/// Gathers the guest memory of `segs` into `out` (cleared first).
pub fn gather(
    ctx: &IoContext<'_>,
    segs: &[Segment],
    out: &mut Vec<u8>,
    lba: u64,
    nsid: u32,
) -> Result<(), Failure> {
    out.clear();
    // SAFETY: the segments were translated against ctx.mem, alive for
    // this call.
    unsafe { super::segment::gather(ctx.mem, segs, out) }.map_err(|_| transfer_failure(lba, nsid))
}

/// Scatters `data` into the guest memory of `segs`.
pub fn scatter(
    ctx: &IoContext<'_>,
    segs: &[Segment],
    data: &[u8],
    lba: u64,
    nsid: u32,
) -> Result<(), Failure> {
    // SAFETY: as for gather, the segments were translated (writable)
    // against ctx.mem.
    unsafe { super::segment::scatter(ctx.mem, segs, data) }.map_err(|_| transfer_failure(lba, nsid))
}

/// Reads `len` bytes of the namespace at byte `off` into `out` (resized;
/// the null backend leaves zeroes).
pub fn read_data(ns: &Namespace, off: u64, len: usize, out: &mut Vec<u8>) -> Result<(), Errno> {
    out.clear();
    if let Backend::Custom(c) = &ns.backend {
        return c.read_into(off, len, out);
    }
    out.resize(len, 0);
    // SAFETY: out holds len bytes; the caller's range check keeps
    // off + len inside the namespace.
    unsafe { ns.backend.read(off, out.as_mut_ptr(), len) }
}

/// Writes `data` to the namespace at byte `off`.
pub fn write_data(ns: &Namespace, off: u64, data: &[u8]) -> Result<(), Errno> {
    if let Backend::Custom(c) = &ns.backend {
        return c.write_from(off, data);
    }
    // SAFETY: data holds its length; the caller's range check keeps
    // off + len inside the namespace.
    unsafe { ns.backend.write(off, data.as_ptr(), data.len()) }
}
