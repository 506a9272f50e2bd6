//! NVM I/O commands: Read, Write, Flush (NVM Command Set 2.0, 3.2 and 3.3).

use super::prp::{self, Segment};
use crate::backend::Backend;
use crate::mem::MemoryMap;
use crate::spec::opcode::io as op;
use crate::spec::{Sqe, Status};

/// One namespace: its storage and LBA format.
pub struct Namespace {
    pub backend: Backend,
    /// log2 of the LBA data size.
    pub lba_shift: u32,
    /// Number of LBAs (NSZE).
    pub lbas: u64,
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
    pub smart: &'a mut Smart,
}

/// SQE byte offsets of fields, for Parameter Error Location.
mod loc {
    pub const OPCODE: u16 = 0;
    pub const PSDT: u16 = 1;
    pub const NSID: u16 = 4;
    pub const PRP1: u16 = 24;
    pub const SLBA: u16 = 40;
    pub const NLB: u16 = 48;
}

fn fail(status: Status, param_loc: u16, lba: u64, nsid: u32) -> Failure {
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
    match sqe.opcode() {
        op::READ | op::WRITE => rw(ctx, sqe, sqe.opcode() == op::READ),
        op::FLUSH => {
            // VWC bits 2:1 = 10b: broadcast flush (FFFFFFFFh) is not
            // supported, so it is an invalid namespace like any other.
            let ns = namespace(ctx, nsid)?;
            ns.backend.flush();
            Ok(0)
        }
        _ => Err(fail(Status::INVALID_OPCODE.dnr(), loc::OPCODE, 0, nsid)),
    }
}

fn namespace<'a>(ctx: &IoContext<'a>, nsid: u32) -> Result<&'a Namespace, Failure> {
    nsid.checked_sub(1)
        .and_then(|i| ctx.namespaces.get(i as usize))
        .ok_or(fail(Status::INVALID_NAMESPACE.dnr(), loc::NSID, 0, nsid))
}

#[inline]
fn rw(ctx: &mut IoContext<'_>, sqe: &Sqe, read: bool) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let slba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
    let nlb = u64::from(sqe.cdw(12) & 0xffff) + 1;
    if sqe.psdt() != 0 {
        // SGLs are not advertised (Identify SGLS = 0): Invalid Field.
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::PSDT, slba, nsid));
    }
    if sqe.fuse() != 0 {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::OPCODE, slba, nsid));
    }
    match slba.checked_add(nlb) {
        Some(end) if end <= ns.lbas => {}
        _ => return Err(fail(Status::LBA_OUT_OF_RANGE.dnr(), loc::SLBA, slba, nsid)),
    }
    // nlb <= 65536 and lba_shift <= 12: no overflow.
    let len = nlb << ns.lba_shift;
    if ctx.mdts_bytes != 0 && len > ctx.mdts_bytes {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::NLB, slba, nsid));
    }
    if let Err(e) = prp::walk(
        ctx.mem,
        sqe.prp1(),
        sqe.prp2(),
        len,
        ctx.page_size,
        read,
        ctx.segs,
    ) {
        return Err(fail(e.status(), loc::PRP1, slba, nsid));
    }
    let mut off = slba << ns.lba_shift;
    for s in ctx.segs.iter() {
        // SAFETY: each segment was translated against the snapshot in
        // ctx.mem, which keeps its region mapped for this call; the LBA range
        // check above keeps off + len inside the namespace.
        unsafe {
            if read {
                ns.backend.read(off, s.ptr, s.len);
            } else {
                ns.backend.write(off, s.ptr, s.len);
            }
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
