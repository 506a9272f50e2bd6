//! The zone rules inside the NVM commands (ZNS 1.1, 2.1.1.2 and 3.3) and
//! Zone Append (3.4.1). `cmd/io.rs` and `cmd/nvm.rs` call in here only for
//! a zoned namespace.
//!
//! Writes (Write, Write Zeroes, Copy's destination, Zone Append) reserve
//! their blocks in the zone table after every other check passed (so a bad
//! data pointer moves no write pointer), then move the data. Reads check
//! Offline and Read Across Zone Boundaries, and return zeroes for blocks at
//! or above the zone's data frontier (above the write pointer, in the
//! ZCAP..ZSZE gap, in Empty zones) whatever the backend holds there
//! (DLFEAT 001b): the backend is not read for them.

use super::state::ZoneError;
use super::table::{Reservation, Zones};
use crate::cmd::io::{
    count, data_pointer, fail, file_failure, lba_range, loc, namespace, rw_segments,
    transfer_failure, writable, Failure, IoContext, Namespace,
};
use crate::cmd::segment::{self, Segment, Target};
use crate::mem::MemoryMap;
use crate::spec::{Sqe, Status};

/// The zones of `ns`, or Invalid Command Opcode: a zone command on a
/// conventional namespace.
pub(crate) fn zoned(ns: &Namespace, nsid: u32) -> Result<&Zones, Failure> {
    ns.zones
        .as_deref()
        .ok_or(fail(Status::INVALID_OPCODE.dnr(), loc::OPCODE, 0, nsid))
}

/// A zone's refusal as the command's failure: with Do Not Retry, as QEMU
/// sets it (the same command fails the same way), except inside Copy.
pub(crate) fn zone_fail(e: ZoneError, lba: u64, nsid: u32, dnr: bool) -> Failure {
    let s = e.status();
    fail(if dnr { s.dnr() } else { s }, loc::CDW10, lba, nsid)
}

/// Where the blocks of a read lie against the zones' data frontiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// All written: read the backend.
    Below,
    /// None written: zeroes, no backend access.
    Above,
    /// Some of each.
    Mixed,
}

/// Checks a read of `[slba, slba+nlb)` (in the namespace) without a lock:
/// Zone Boundary Error when it spans zones and RAZB is off, Zone Is Offline
/// when a zone it touches is offline.
pub(crate) fn read_plan(z: &Zones, slba: u64, nlb: u64) -> Result<Plan, ZoneError> {
    let g = &z.geo;
    let end = slba + nlb;
    let (first, last) = (g.zone_of(slba), g.zone_of(end - 1));
    if first != last && !g.cross_read {
        return Err(ZoneError::Boundary);
    }
    let (mut below, mut above) = (false, false);
    for zone in first..=last {
        let (state, frontier) = z.peek(zone as u32);
        if state == super::ZoneState::Offline {
            return Err(ZoneError::Offline);
        }
        let zs = zone << g.zone_shift;
        let (a, b) = (slba.max(zs), end.min(zs + g.zone_lbas()));
        let f = zs + frontier;
        below |= a < f;
        above |= b > f;
    }
    Ok(match (below, above) {
        (true, false) => Plan::Below,
        (false, _) => Plan::Above,
        (true, true) => Plan::Mixed,
    })
}

/// Calls `f(first, count)` for each run of blocks of `[slba, slba+nlb)` at
/// or above its zone's data frontier, `first` relative to `slba`.
fn unwritten(z: &Zones, slba: u64, nlb: u64, mut f: impl FnMut(u64, u64)) {
    let g = &z.geo;
    let end = slba + nlb;
    for zone in g.zone_of(slba)..=g.zone_of(end - 1) {
        let (_, frontier) = z.peek(zone as u32);
        let zs = zone << g.zone_shift;
        let a = slba.max(zs + frontier);
        let b = end.min(zs + g.zone_lbas());
        if a < b {
            f(a - slba, b - a);
        }
    }
}

/// Zeroes bytes `[from, from+len)` of the transfer `segs` describe.
fn zero_segments(mem: &MemoryMap, segs: &[Segment], from: u64, len: u64) -> Result<(), ()> {
    let (mut at, end) = (0u64, from + len);
    let zeros = [0u8; 4096];
    for s in segs {
        let (a, b) = (at.max(from), (at + s.len as u64).min(end));
        if a < b {
            let (off, n) = ((a - at) as usize, (b - a) as usize);
            match s.target {
                // SAFETY: the segment was translated (writable, s.len bytes)
                // against `mem`, which the caller holds; off + n <= s.len.
                Target::Host(p) => unsafe { std::ptr::write_bytes(p.add(off), 0, n) },
                Target::Remote(iova) => {
                    let mut done = 0;
                    while done < n {
                        let k = (n - done).min(zeros.len());
                        mem.remote_write(iova + (off + done) as u64, &zeros[..k])
                            .map_err(drop)?;
                        done += k;
                    }
                }
                Target::BitBucket => {}
            }
        }
        at += s.len as u64;
        if at >= end {
            break;
        }
    }
    Ok(())
}

/// Namespace bytes `[off, off+len)` with unwritten blocks as zeroes, into
/// `out` (the slow path of Compare and Copy).
pub(crate) fn read_synth(
    ns: &Namespace,
    z: &Zones,
    off: u64,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<(), crate::backend::Errno> {
    let shift = ns.lba_shift();
    out.clear();
    out.resize(len as usize, 0);
    if !ns.backend.transfers_data() {
        return Ok(());
    }
    // SAFETY: out holds len bytes; the caller's range check keeps the
    // namespace range inside the namespace.
    unsafe { ns.backend.read(off, out.as_mut_ptr(), len as usize)? };
    unwritten(z, off >> shift, len >> shift, |a, n| {
        let (a, n) = ((a << shift) as usize, (n << shift) as usize);
        out[a..a + n].fill(0);
    });
    Ok(())
}

/// Read and Write of a zoned namespace, after the common checks
/// (`lba_transfer`): `off`/`len` in bytes, the data pointer in `ctx.segs`.
pub(crate) fn rw(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    z: &Zones,
    off: u64,
    len: u64,
    read: bool,
) -> Result<u64, Failure> {
    let shift = ns.lba_shift();
    let (slba, nlb, nsid) = (off >> shift, len >> shift, sqe.nsid());
    if read {
        let plan = read_plan(z, slba, nlb).map_err(|e| zone_fail(e, slba, nsid, true))?;
        if plan != Plan::Above {
            rw_segments(ctx, sqe, ns, off, true)?;
        }
        if plan != Plan::Below && ns.backend.transfers_data() {
            let mut r = Ok(());
            unwritten(z, slba, nlb, |a, n| {
                if r.is_ok() {
                    r = zero_segments(ctx.mem, ctx.segs, a << shift, n << shift);
                }
            });
            r.map_err(|()| transfer_failure(slba, nsid))?;
        }
        count(ctx.smart, true, len);
        return Ok(0);
    }
    let r = reserve(ns, z, Some(slba), nlb, nsid, true)?;
    // A Write's completion carries nothing in DW0/DW1.
    write_reserved(ctx, sqe, ns, z, r, len).map(|_| 0)
}

/// Moves a Write's or Zone Append's data (in `ctx.segs`, `len` bytes) to
/// the blocks `r` reserved, then releases them; Ok carries the LBA.
fn write_reserved(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    z: &Zones,
    r: Reservation,
    len: u64,
) -> Result<u64, Failure> {
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    let lba = r.slba;
    let off = lba << ns.lba_shift();
    ns.will_write(off, len, fua);
    let moved = rw_segments(ctx, sqe, ns, off, false);
    written(ctx, ns, z, r, fua, sqe.nsid())?;
    moved?;
    count(ctx.smart, false, len);
    Ok(lba)
}

/// Reserves `nlb` blocks at `slba` (None: a Zone Append to the zone of
/// `zslba`) for a write; `dnr` as [`zone_fail`].
pub(crate) fn reserve(
    ns: &Namespace,
    z: &Zones,
    slba: Option<u64>,
    nlb: u64,
    nsid: u32,
    dnr: bool,
) -> Result<Reservation, Failure> {
    reserve_in(ns, z, slba, slba.unwrap_or(0), nlb, nsid, dnr)
}

fn reserve_in(
    ns: &Namespace,
    z: &Zones,
    slba: Option<u64>,
    lba: u64,
    nlb: u64,
    nsid: u32,
    dnr: bool,
) -> Result<Reservation, Failure> {
    let track = z.persistent() || ns.cache.tracking();
    z.reserve(z.geo.zone_of(lba) as u32, slba, nlb, track)
        .map_err(|e| zone_fail(e, lba, nsid, dnr))
}

/// The data of reservation `r` is written: the blocks count as completed,
/// and with FUA (or the volatile write cache off, when durability is
/// tracked) the namespace is flushed and the write pointers made durable.
pub(crate) fn written(
    ctx: &mut IoContext<'_>,
    ns: &Namespace,
    z: &Zones,
    r: Reservation,
    fua: bool,
    nsid: u32,
) -> Result<(), Failure> {
    let slba = r.slba;
    z.complete(r);
    let tracked = z.persistent() || ns.cache.tracking();
    if fua || (tracked && !ns.cache.write_cache()) {
        // A whole flush, stronger than FUA asks: the write pointer may then
        // claim every block below it, not only this command's.
        ns.flush()
            .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
    }
    Ok(())
}

/// 7Dh Zone Append: SLBA names the zone; the data goes to its write
/// pointer, whose LBA (ALBA) the completion carries in DW0/DW1.
pub fn append(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let z = zoned(ns, nsid)?;
    writable(ns, 0, nsid)?;
    let (zslba, nlb) = lba_range(ns, sqe)?;
    let invalid = |at| fail(Status::INVALID_FIELD.dnr(), at, zslba, nsid);
    if zslba & (z.geo.zone_lbas() - 1) != 0 {
        // Not a zone's lowest LBA: Invalid Field, not a zone status (2.1.1.2.1.1).
        return Err(invalid(loc::CDW10));
    }
    let shift = ns.lba_shift();
    let len = nlb << shift;
    if (ctx.mdts_bytes != 0 && len > ctx.mdts_bytes)
        || (z.geo.zasl_bytes != 0 && len > z.geo.zasl_bytes)
    {
        return Err(invalid(loc::CDW12));
    }
    data_pointer(ctx, sqe, len, false, zslba)?;
    let r = reserve_in(ns, z, None, zslba, nlb, nsid, true)?;
    let alba = write_reserved(ctx, sqe, ns, z, r, len)?;
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    crate::cmd::io::rewritten(ns, alba, nlb, fua, nsid, ctx.smart)?;
    Ok(alba)
}

/// Compare on a zoned namespace: Below its frontiers, as on any namespace
/// (`None`: the caller goes on); else the host's data against the
/// namespace with unwritten blocks as zeroes.
pub(crate) fn compare(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    z: &Zones,
    off: u64,
    len: u64,
) -> Option<Result<u64, Failure>> {
    let shift = ns.lba_shift();
    let (slba, nsid) = (off >> shift, sqe.nsid());
    match read_plan(z, slba, len >> shift) {
        Err(e) => Some(Err(zone_fail(e, slba, nsid, true))),
        Ok(Plan::Below) => None,
        Ok(_) => {
            let mut host = Vec::with_capacity(len as usize);
            // SAFETY: the segments were translated against ctx.mem, alive
            // for this call.
            if unsafe { segment::gather(ctx.mem, ctx.segs, &mut host) }.is_err() {
                return Some(Err(transfer_failure(slba, nsid)));
            }
            let mut have = Vec::new();
            if let Err(e) = read_synth(ns, z, off, len, &mut have) {
                return Some(Err(file_failure(e, false, slba, nsid, ctx.smart)));
            }
            ctx.smart.bytes_read += len;
            ctx.smart.host_read_commands += 1;
            Some(if host == have || !ns.backend.transfers_data() {
                Ok(0)
            } else {
                Err(fail(Status::COMPARE_FAILURE.dnr(), loc::CDW10, slba, nsid))
            })
        }
    }
}

/// Verify, Dataset Management: the zones of `[slba, slba+nlb)` checked as
/// a read checks them (Offline; with `boundary`, RAZB too).
pub(crate) fn check_range(
    z: &Zones,
    slba: u64,
    nlb: u64,
    nsid: u32,
    boundary: bool,
) -> Result<(), Failure> {
    if nlb == 0 {
        return Ok(());
    }
    match read_plan(z, slba, nlb) {
        Err(ZoneError::Boundary) if !boundary => Ok(()),
        Err(e) => Err(zone_fail(e, slba, nsid, true)),
        Ok(_) => Ok(()),
    }
}

/// Copy with a zoned namespace: the source ranges checked as reads (no
/// DNR, as QEMU reports zone errors inside Copy), the destination reserved
/// as a write, each source read with unwritten blocks as zeroes.
pub(crate) fn copy(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    z: &Zones,
    sdlba: u64,
    total: u64,
    ranges: &[(u64, u64)],
) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    for &(slba, nlb) in ranges {
        read_plan(z, slba, nlb).map_err(|e| zone_fail(e, slba, nsid, false))?;
    }
    let shift = ns.lba_shift();
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    let r = reserve(ns, z, Some(sdlba), total, nsid, false)?;
    ns.will_write(sdlba << shift, total << shift, fua);
    let mut buf = Vec::new();
    let mut dst = sdlba;
    let mut moved = Ok(());
    for &(slba, nlb) in ranges {
        let step = read_synth(ns, z, slba << shift, nlb << shift, &mut buf).and_then(|()| {
            // SAFETY: the destination range was checked against the
            // namespace; buf holds nlb << shift bytes.
            unsafe { ns.backend.write(dst << shift, buf.as_ptr(), buf.len()) }
        });
        if let Err(e) = step {
            moved = Err(file_failure(e, true, dst, nsid, ctx.smart));
            break;
        }
        dst += nlb;
    }
    written(ctx, ns, z, r, fua, nsid)?;
    moved?;
    ctx.smart.bytes_written += total << shift;
    ctx.smart.host_write_commands += 1;
    Ok(0)
}

/// Write Zeroes on a zoned namespace: reserved as a write first.
pub(crate) fn write_zeroes(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    z: &Zones,
    slba: u64,
    nlb: u64,
    zero: impl FnOnce() -> Result<(), crate::backend::Errno>,
) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    let r = reserve(ns, z, Some(slba), nlb, nsid, true)?;
    let shift = ns.lba_shift();
    ns.will_write(slba << shift, nlb << shift, fua);
    let moved = zero().map_err(|e| file_failure(e, true, slba, nsid, ctx.smart));
    written(ctx, ns, z, r, fua, nsid)?;
    moved?;
    ctx.smart.host_write_commands += 1;
    Ok(0)
}
