//! Zone Management Send (79h) and Zone Management Receive (7Ah), ZNS 1.1
//! 3.4.2 and 3.4.3. Every error carries DNR, as QEMU's do.

use super::io::{zone_fail, zoned};
use super::state::ZoneState;
use super::za;
use crate::backend::Backend;
use crate::cmd::io::{
    data_pointer, fail, file_failure, loc, namespace, read_buffer, Failure, IoContext,
};
use crate::cmd::segment::{Segment, Target};
use crate::mem::MemoryMap;
use crate::spec::{Sqe, Status};

/// Zone Send Actions (CDW13 bits 7:0).
pub mod zsa {
    pub const CLOSE: u32 = 0x01;
    pub const FINISH: u32 = 0x02;
    pub const OPEN: u32 = 0x03;
    pub const RESET: u32 = 0x04;
    pub const OFFLINE: u32 = 0x05;
    pub const SET_ZDE: u32 = 0x10;
}

/// CDW13's byte offset in the SQE (Parameter Error Location).
const CDW13: u16 = 52;
/// Select All (CDW13 bit 8).
const SELECT_ALL: u32 = 1 << 8;
/// Zone Receive Actions and their Partial Report bit (CDW13 bit 16).
const REPORT: u32 = 0x00;
const EXTENDED_REPORT: u32 = 0x01;
const PARTIAL: u32 = 1 << 16;
/// A Zone Descriptor (Figure 37) and the report header (Figure 35).
const DESCRIPTOR: usize = 64;
const HEADER: usize = 64;
/// Zone Type: Sequential Write Required.
const ZT_SWR: u8 = 0x2;

fn slba_of(sqe: &Sqe) -> u64 {
    u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32)
}

/// 79h Zone Management Send.
pub fn send(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let z = zoned(ns, nsid)?;
    let cdw13 = sqe.cdw(13);
    let (action, all) = (cdw13 & 0xff, cdw13 & SELECT_ALL != 0);
    let slba = slba_of(sqe);
    let invalid = |at| fail(Status::INVALID_FIELD.dnr(), at, slba, nsid);
    if !all {
        if slba >= ns.lbas() {
            return Err(fail(Status::LBA_OUT_OF_RANGE.dnr(), loc::CDW10, slba, nsid));
        }
        if slba & (z.geo.zone_lbas() - 1) != 0 {
            return Err(invalid(loc::CDW10));
        }
    }
    if !matches!(
        action,
        zsa::CLOSE | zsa::FINISH | zsa::OPEN | zsa::RESET | zsa::OFFLINE | zsa::SET_ZDE
    ) {
        return Err(invalid(CDW13));
    }
    if z.readonly || ns.backend.readonly() {
        return Err(fail(
            Status::NAMESPACE_WRITE_PROTECTED.dnr(),
            loc::NSID,
            slba,
            nsid,
        ));
    }
    let zone = z.geo.zone_of(slba) as u32;
    let one = |r: Result<(), super::ZoneError>| r.map(|()| ((), Vec::new()));
    let done = match (action, all) {
        (zsa::CLOSE, false) => z.manage(Some(zone), |m, _| one(m.close(zone))),
        (zsa::CLOSE, true) => z.manage(None, |m, _| Ok(((), m.close_all()))),
        (zsa::FINISH, false) => z.manage(Some(zone), |m, _| one(m.finish(zone))),
        (zsa::FINISH, true) => z.manage(None, |m, _| Ok(((), m.finish_all()))),
        (zsa::OPEN, false) => z.manage(Some(zone), |m, _| one(m.open(zone))),
        (zsa::OPEN, true) => z.manage(None, |m, _| m.open_all().map(|l| ((), l))),
        (zsa::OFFLINE, false) => z.manage(Some(zone), |m, ext| {
            m.offline(zone)?;
            ext.remove(&zone);
            Ok(((), Vec::new()))
        }),
        (zsa::OFFLINE, true) => z.manage(None, |m, ext| {
            let l = m.offline_all();
            l.iter().for_each(|z| drop(ext.remove(z)));
            Ok(((), l))
        }),
        (zsa::RESET, _) => {
            let reset = z.manage(Some(zone).filter(|_| !all), |m, ext| {
                let l = if all {
                    m.reset_all()
                } else if m.reset(zone)? {
                    vec![zone]
                } else {
                    Vec::new()
                };
                l.iter().for_each(|z| drop(ext.remove(z)));
                Ok((l.clone(), l))
            });
            // A file reclaims the space (a hole), a storage object is told
            // (it deallocates). Memory keeps its pages: handing them back
            // would make every write of the zone's next use fault a fresh
            // page in (sequential zoned writes ran at a fifth of plain ones
            // that way), and reads of an Empty zone return zeroes whatever
            // the backend holds. A refusal only costs the space.
            if let Ok(Ok(list)) = &reset {
                // An Empty zone reads zeroes: no block of it is marked
                // uncorrectable any more.
                for &r in list {
                    let zone = (z.geo.zslba(r), z.geo.zone_lbas());
                    crate::cmd::io::rewritten(ns, zone.0, zone.1, false, nsid, ctx.smart)?;
                }
            }
            if let (Ok(Ok(list)), false) = (&reset, matches!(ns.backend, Backend::Ram(_))) {
                let shift = ns.lba_shift();
                let size = z.geo.zone_lbas() << shift;
                for &r in list {
                    // SAFETY: a whole zone, inside the namespace.
                    let _ = unsafe { ns.backend.deallocate(z.geo.zslba(r) << shift, size) };
                }
            }
            reset.map(|r| r.map(drop))
        }
        (zsa::SET_ZDE, _) => {
            let n = z.geo.zde_bytes as usize;
            if all || n == 0 {
                return Err(invalid(CDW13));
            }
            // The data comes in first (QEMU does the same), then the state.
            read_buffer(ctx, sqe, n)?;
            let data: Box<[u8]> = ctx.scratch[..n].into();
            z.manage(Some(zone), move |m, ext| {
                m.set_zde(zone)?;
                ext.insert(zone, data);
                Ok(((), Vec::new()))
            })
        }
        _ => return Err(invalid(CDW13)),
    };
    match done {
        Ok(Ok(())) => Ok(0),
        Ok(Err(e)) => Err(zone_fail(e, slba, nsid, true)),
        Err(errno) => Err(file_failure(errno, true, slba, nsid, ctx.smart)),
    }
}

/// True when a zone in `state` with attributes `attrs` matches Reporting
/// Option `zrasf` (Figure 34).
fn matches(zrasf: u32, state: ZoneState, attrs: u8) -> bool {
    match zrasf {
        0 => true,
        9 => attrs & (za::RZR | za::FZR | za::ZFC) != 0,
        s => {
            state as u32
                == match s {
                    1 => 0x1,
                    2 => 0x2,
                    3 => 0x3,
                    4 => 0x4,
                    5 => 0xe,
                    6 => 0xd,
                    _ => 0xf,
                }
        }
    }
}

/// Copies `data` into the start of the transfer `segs` describe (a report
/// shorter than the host's buffer leaves the rest as it was).
fn scatter_prefix(mem: &MemoryMap, segs: &[Segment], data: &[u8]) -> Result<(), ()> {
    let mut at = 0usize;
    for s in segs {
        if at >= data.len() {
            break;
        }
        let n = s.len.min(data.len() - at);
        let piece = &data[at..at + n];
        match s.target {
            // SAFETY: the segment was translated (writable, s.len bytes)
            // against `mem`, held by the caller; n <= s.len.
            Target::Host(p) => unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr(), p, n) },
            Target::Remote(iova) => mem.remote_write(iova, piece).map_err(drop)?,
            Target::BitBucket => {}
        }
        at += n;
    }
    Ok(())
}

/// 7Ah Zone Management Receive: Report Zones or Extended Report Zones from
/// the zone holding SLBA, filtered, into a buffer of any size.
pub fn receive(ctx: &mut IoContext<'_>, sqe: &Sqe) -> Result<u64, Failure> {
    let nsid = sqe.nsid();
    let ns = namespace(ctx, nsid)?;
    let z = zoned(ns, nsid)?;
    let slba = slba_of(sqe);
    if slba >= ns.lbas() {
        return Err(fail(Status::LBA_OUT_OF_RANGE.dnr(), loc::CDW10, slba, nsid));
    }
    let cdw13 = sqe.cdw(13);
    let (zra, zrasf, partial) = (cdw13 & 0xff, (cdw13 >> 8) & 0xff, cdw13 & PARTIAL != 0);
    let invalid = |at| fail(Status::INVALID_FIELD.dnr(), at, slba, nsid);
    let ext = match zra {
        REPORT => 0,
        EXTENDED_REPORT if z.geo.zde_bytes != 0 => z.geo.zde_bytes as usize,
        _ => return Err(invalid(CDW13)),
    };
    // 9h (zones with a recommendation or finished by the controller) is
    // an Extended Report Zones option (Figure 34).
    if !(zrasf <= 7 || (zrasf == 9 && zra == EXTENDED_REPORT)) {
        return Err(invalid(CDW13 + 1));
    }
    let len = (u64::from(sqe.cdw(12)) + 1) * 4;
    if ctx.mdts_bytes != 0 && len > ctx.mdts_bytes {
        return Err(invalid(loc::CDW12));
    }
    data_pointer(ctx, sqe, len, true, slba)?;
    let entry = DESCRIPTOR + ext;
    let geo = z.geo;
    let want = usize::try_from(len).unwrap_or(usize::MAX);
    let out = &mut *ctx.scratch;
    out.clear();
    out.resize(HEADER, 0);
    let (mut full, mut total) = (0u64, 0u64);
    z.with(|m, exts| {
        for zi in geo.zone_of(slba) as u32..geo.zones {
            let zone = m.zone(zi);
            if !matches(zrasf, zone.state, zone.attrs) {
                continue;
            }
            total += 1;
            if out.len() >= want {
                if partial {
                    break;
                }
                continue;
            }
            let at = out.len();
            out.resize(at + entry, 0);
            let d = &mut out[at..];
            d[0] = ZT_SWR;
            d[1] = (zone.state as u8) << 4;
            d[2] = zone.attrs;
            let zslba = geo.zslba(zi);
            let wp = if zone.state.wp_valid() {
                zslba + zone.wp
            } else {
                u64::MAX
            };
            d[8..16].copy_from_slice(&geo.zcap.to_le_bytes());
            d[16..24].copy_from_slice(&zslba.to_le_bytes());
            d[24..32].copy_from_slice(&wp.to_le_bytes());
            if let (true, Some(e)) = (ext > 0, exts.get(&zi)) {
                let n = e.len().min(ext);
                d[DESCRIPTOR..DESCRIPTOR + n].copy_from_slice(&e[..n]);
            }
            if at + entry <= want {
                full += 1;
            }
        }
    });
    let count = if partial { full } else { total };
    out[0..8].copy_from_slice(&count.to_le_bytes());
    out.truncate(want);
    scatter_prefix(ctx.mem, ctx.segs, out)
        .map_err(|()| fail(Status::DATA_TRANSFER_ERROR.dnr(), loc::DPTR, slba, nsid))?;
    Ok(0)
}
