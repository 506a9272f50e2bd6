//! The rest of the NVM command set (NVM Command Set 2.0, 3.3): Write
//! Uncorrectable, Compare, Write Zeroes, Dataset Management, Verify, Copy.

use super::io::{
    fail, file_failure, lba_range, lba_transfer, loc, namespace, read_buffer, rewritten,
    transfer_failure, unmarked, writable, Failure, IoContext,
};
use super::segment::{self, Segment, Target};
use crate::spec::{Sqe, Status};

/// Copy limits advertised in Identify Namespace (and enforced here):
/// Maximum Single Source Range Length, in LBAs.
pub const MSSRL: u64 = 256;
/// Maximum Copy Length, in LBAs.
pub const MCL: u64 = 4096;
/// Maximum Source Range Count, 0's based.
pub const MSRC: u32 = 127;

/// Force Unit Access (CDW12 bit 30) of Write Zeroes and Copy: what they
/// wrote is durable before they complete.
fn fua_flush(
    ctx: &mut IoContext<'_>,
    ns: &super::io::Namespace,
    sqe: &Sqe,
    lba: u64,
) -> Result<(), Failure> {
    if sqe.cdw(12) & (1 << 30) == 0 {
        return Ok(());
    }
    ns.backend
        .flush()
        .map_err(|e| file_failure(e, true, lba, sqe.nsid(), ctx.smart))
}

/// 04h Write Uncorrectable (NVM Command Set 1.0, 3.3.7): the blocks read
/// back as Unrecovered Read Error until written again. No data, no size
/// limit (WUSL 0). On a zoned namespace it is a write at the write pointer
/// (the zone rules of Write Zeroes).
pub fn write_uncorrectable(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let (slba, nlb) = lba_range(ns, sqe)?;
    writable(ns, slba, nsid)?;
    // Durable as a write is: at once with the volatile write cache off,
    // else at the next Flush (or an orderly close).
    let durable = !ns.cache.write_cache();
    let mark = || ns.uncorrectable.mark(slba, nlb, durable);
    if let Some(z) = &ns.zones {
        return crate::zns::io::write_zeroes(ctx, sqe, ns, z, slba, nlb, mark);
    }
    mark().map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
    ctx.smart.host_write_commands += 1;
    Ok(0)
}

/// 05h Compare: the host's data against the namespace.
pub fn compare(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let ns = namespace(ctx, sqe.nsid())?;
    let (slba, nlb) = lba_range(ns, sqe)?;
    unmarked(ns, slba, nlb, sqe.nsid(), ctx.smart)?;
    if ns.meta.active() {
        return super::protect::compare(ctx, sqe, ns).map(u64::from);
    }
    let (ns, mut off, len) = lba_transfer(ctx, sqe, false)?;
    if let Some(z) = &ns.zones {
        if let Some(r) = crate::zns::io::compare(ctx, sqe, ns, z, off, len) {
            return r;
        }
    }
    let slba = off >> ns.lba_shift();
    if ctx.segs.iter().any(Segment::is_remote) {
        segment::fetch_remote(ctx.mem, ctx.segs, ctx.scratch)
            .map_err(|_| transfer_failure(slba, sqe.nsid()))?;
    }
    let mut fetched = 0usize;
    let mut equal = true;
    for s in ctx.segs.iter() {
        let src = match s.target {
            Target::Host(p) => p.cast_const(),
            Target::Remote(_) => {
                let piece = &ctx.scratch[fetched..fetched + s.len];
                fetched += s.len;
                piece.as_ptr()
            }
            // A host-to-device walk never yields one.
            Target::BitBucket => continue,
        };
        // SAFETY: src is s.len readable bytes: a host pointer translated
        // against ctx.mem (alive for this call) or the fetched copy in
        // ctx.scratch; the range check keeps off + len in the namespace.
        equal &= unsafe { ns.backend.compare(off, src, s.len) }
            .map_err(|e| file_failure(e, false, slba, sqe.nsid(), ctx.smart))?;
        off += s.len as u64;
    }
    ctx.smart.bytes_read += len;
    ctx.smart.host_read_commands += 1;
    if equal {
        Ok(0)
    } else {
        Err(fail(
            Status::COMPARE_FAILURE.dnr(),
            loc::CDW10,
            slba,
            sqe.nsid(),
        ))
    }
}

/// 08h Write Zeroes (DEAC bit 25 deallocates, which reads back as zeroes
/// too: DLFEAT 001b). No data pointer; not limited by MDTS.
pub fn write_zeroes(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let ns = namespace(ctx, sqe.nsid())?;
    let r = zero_blocks(ctx, sqe, ns)?;
    let (slba, nlb) = lba_range(ns, sqe)?;
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    rewritten(ns, slba, nlb, fua, sqe.nsid(), ctx.smart)?;
    Ok(r)
}

fn zero_blocks(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &super::io::Namespace,
) -> Result<u64, Failure> {
    if ns.meta.active() {
        return super::protect::write_zeroes(ctx, sqe, ns).map(u64::from);
    }
    let (slba, nlb) = lba_range(ns, sqe)?;
    writable(ns, slba, sqe.nsid())?;
    let shift = ns.lba_shift();
    let (off, len) = (slba << shift, nlb << shift);
    // DEAC (CDW12 bit 25): deallocate rather than write zeroes.
    let deac = sqe.cdw(12) & (1 << 25) != 0;
    let zero = || {
        if deac {
            // SAFETY: the range check keeps it inside the namespace.
            unsafe { ns.backend.deallocate(off, len) }
        } else {
            // SAFETY: as above.
            unsafe { ns.backend.zero(off, len) }
        }
    };
    if let Some(z) = &ns.zones {
        return crate::zns::io::write_zeroes(ctx, sqe, ns, z, slba, nlb, zero);
    }
    ns.will_write(off, len, sqe.cdw(12) & (1 << 30) != 0);
    zero().map_err(|e| file_failure(e, true, slba, sqe.nsid(), ctx.smart))?;
    fua_flush(ctx, ns, sqe, slba)?;
    ctx.smart.host_write_commands += 1;
    Ok(0)
}

/// 09h Dataset Management: with AD (CDW11 bit 2) the ranges are
/// deallocated; the integral hints (IDR, IDW) change nothing here.
pub fn dataset_management(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let nr = (sqe.cdw(10) & 0xff) as usize + 1;
    let deallocate = sqe.cdw(11) & (1 << 2) != 0;
    read_buffer(ctx, sqe, nr * 16)?;
    let lbas = ns.lbas();
    // Check every range before changing any.
    let mut ranges = Vec::with_capacity(nr);
    for r in ctx.scratch.chunks_exact(16) {
        let len = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
        let slba = u64::from_le_bytes(r[8..16].try_into().unwrap_or_default());
        match slba.checked_add(len) {
            Some(end) if end <= lbas => ranges.push((slba, len)),
            _ => return Err(fail(Status::LBA_OUT_OF_RANGE.dnr(), loc::DPTR, slba, nsid)),
        }
    }
    if let Some(z) = &ns.zones {
        // A range in an Offline zone: Zone Is Offline (ZNS 1.1, 3.3.3).
        for &(slba, len) in &ranges {
            crate::zns::io::check_range(z, slba, len, nsid, false)?;
        }
    }
    if deallocate {
        writable(ns, 0, nsid)?;
        let shift = ns.lba_shift();
        for (slba, len) in ranges {
            ns.will_write(slba << shift, len << shift, false);
            // SAFETY: checked against the namespace above.
            unsafe { ns.backend.deallocate(slba << shift, len << shift) }
                .and_then(|()| super::protect::deallocated(ns, slba, len))
                .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
            rewritten(ns, slba, len, false, nsid, ctx.smart)?;
        }
    }
    Ok(0)
}

/// 0Ch Verify: the range must exist; the data is always intact here.
pub fn verify(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let ns = namespace(ctx, sqe.nsid())?;
    let (slba, nlb) = lba_range(ns, sqe)?;
    unmarked(ns, slba, nlb, sqe.nsid(), ctx.smart)?;
    if ns.meta.active() {
        return super::protect::verify(ctx, sqe, ns).map(u64::from);
    }
    if let Some(z) = &ns.zones {
        crate::zns::io::check_range(z, slba, nlb, sqe.nsid(), true)?;
    }
    Ok(0)
}

/// 19h Copy with source range entries format 0 (or 1 on a namespace with
/// the 64b guard): each source range in order to consecutive LBAs from
/// SDLBA, within MSRC, MSSRL and MCL.
pub fn copy(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let sdlba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
    let nr = sqe.cdw(12) & 0xff;
    let format = (sqe.cdw(12) >> 8) & 0xf;
    if format > 1 {
        // Formats 2h and 3h name other namespaces (not supported).
        return Err(fail(
            Status::INVALID_FIELD.dnr(),
            loc::CDW12 + 1,
            sdlba,
            nsid,
        ));
    }
    if format != super::protect::copy_format(ns) {
        // Format 0h is for 16b guard PI (or none), 1h for the 64b guard.
        return Err(fail(
            Status::INVALID_NAMESPACE.dnr(),
            loc::CDW12 + 1,
            sdlba,
            nsid,
        ));
    }
    let entry = if format == 1 { 40 } else { 32 };
    if nr > MSRC {
        return Err(fail(
            Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr(),
            loc::CDW12,
            sdlba,
            nsid,
        ));
    }
    read_buffer(ctx, sqe, (nr as usize + 1) * entry)?;
    let lbas = ns.lbas();
    let mut total = 0u64;
    let mut ranges = Vec::with_capacity(nr as usize + 1);
    let mut tagged = Vec::new();
    for e in ctx.scratch.chunks_exact(entry) {
        let slba = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
        let nlb = u64::from(u16::from_le_bytes([e[16], e[17]])) + 1;
        if nlb > MSSRL {
            return Err(fail(
                Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr(),
                loc::DPTR,
                slba,
                nsid,
            ));
        }
        match slba.checked_add(nlb) {
            Some(end) if end <= lbas => ranges.push((slba, nlb)),
            _ => return Err(fail(Status::LBA_OUT_OF_RANGE.dnr(), loc::DPTR, slba, nsid)),
        }
        if ns.meta.active() {
            tagged.push((slba, nlb, super::protect::entry_tags(format, e)));
        }
        total += nlb;
    }
    if total > MCL {
        return Err(fail(
            Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr(),
            loc::CDW12,
            sdlba,
            nsid,
        ));
    }
    match sdlba.checked_add(total) {
        Some(end) if end <= lbas => {}
        _ => {
            return Err(fail(
                Status::LBA_OUT_OF_RANGE.dnr(),
                loc::CDW10,
                sdlba,
                nsid,
            ))
        }
    }
    writable(ns, sdlba, nsid)?;
    for &(slba, nlb) in &ranges {
        unmarked(ns, slba, nlb, nsid, ctx.smart)?;
    }
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    if ns.meta.active() {
        super::protect::copy(ctx, sqe, ns, sdlba, &tagged)?;
    } else if let Some(z) = &ns.zones {
        crate::zns::io::copy(ctx, sqe, ns, z, sdlba, total, &ranges)?;
    } else {
        copy_ranges(ctx, sqe, ns, sdlba, total, &ranges)?;
    }
    rewritten(ns, sdlba, total, fua, nsid, ctx.smart)?;
    Ok(0)
}

/// Copy's data on a namespace without metadata or zones.
fn copy_ranges(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &super::io::Namespace,
    sdlba: u64,
    total: u64,
    ranges: &[(u64, u64)],
) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let shift = ns.lba_shift();
    let mut dst = sdlba;
    ns.will_write(sdlba << shift, total << shift, sqe.cdw(12) & (1 << 30) != 0);
    for &(slba, nlb) in ranges {
        // SAFETY: both ranges were checked against the namespace by the
        // caller.
        unsafe { ns.backend.copy(slba << shift, dst << shift, nlb << shift) }
            .map_err(|e| file_failure(e, true, dst, nsid, ctx.smart))?;
        dst += nlb;
    }
    fua_flush(ctx, ns, sqe, sdlba)?;
    ctx.smart.bytes_written += total << shift;
    ctx.smart.host_write_commands += 1;
    Ok(0)
}
