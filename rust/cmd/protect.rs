//! The NVM commands on a namespace whose blocks carry metadata (NVM
//! Command Set 1.0, 5.2): Read, Write, Compare, Verify, Write Zeroes and
//! Copy, with the metadata moving through MPTR or interleaved in the data
//! (extended LBAs), and protection information checked (PRCHK) and
//! inserted or stripped (PRACT) as the format says.
//!
//! Namespaces without metadata never come here: `io.rs` and `nvm.rs` test
//! one relaxed load (`Meta::active`) and go on as before.

use std::cell::RefCell;

use super::io::{
    fail, file_failure, lba_range, loc, rw_segments, writable, Failure, IoContext, Namespace,
};
use super::meta::{self, all_host, host_slices};
use super::segment::Segment;
use crate::pi::check::{self, Checks, PiError, Tags};
use crate::pi::tuple::{self, ref_mask, Field};
use crate::pi::{Format, Guard, Store};
use crate::spec::{Sqe, Status};

/// Reused buffers of one worker thread.
#[derive(Default)]
struct Bufs {
    /// The command's metadata, `nlb * ms` bytes.
    md: Vec<u8>,
    /// Guest memory of the metadata buffer.
    msegs: Vec<Segment>,
    /// The data, when it cannot be read in place.
    data: Vec<u8>,
    /// Interleaved data and metadata (extended LBAs).
    inter: Vec<u8>,
    guards: Vec<u64>,
}

thread_local! {
    static BUFS: RefCell<Bufs> = RefCell::new(Bufs::default());
}

fn with_bufs<R>(f: impl FnOnce(&mut Bufs) -> R) -> R {
    BUFS.with(|b| f(&mut b.borrow_mut()))
}

/// PRINFO as the command gives it.
#[derive(Clone, Copy)]
struct Prinfo {
    pract: bool,
    checks: Checks,
}

/// PRINFO at bit `shift` (CDW12 26 for the I/O commands, 12 for Copy's
/// PRINFOR); all off on a namespace without PI, where it is ignored
/// (NVM Command Set 1.0, Figure 9).
fn prinfo(fmt: Format, cdw12: u32, shift: u32) -> Prinfo {
    if fmt.pi == 0 {
        return Prinfo {
            pract: false,
            checks: Checks::default(),
        };
    }
    let bits = (cdw12 >> shift) & 0xf;
    Prinfo {
        pract: bits & 8 != 0,
        checks: Checks::from_prchk(bits & 7),
    }
}

/// (E)ILBRT, (E)LBAT, (E)LBATM: CDW14 (+ CDW3 bits 15:0 as bits 47:32 for
/// the 64b guard) and CDW15.
fn tags(fmt: Format, sqe: &Sqe) -> Tags {
    let mut ilbrt = u64::from(sqe.cdw(14));
    if fmt.guard == Guard::Crc64 {
        ilbrt |= u64::from(sqe.dw[3] & 0xffff) << 32;
    }
    Tags {
        ilbrt,
        lbat: sqe.cdw(15) as u16,
        lbatm: (sqe.cdw(15) >> 16) as u16,
    }
}

/// The checks of PRINFO against the format before any data moves: type 1
/// with the reference tag checked needs ILBRT to be the SLBA's low bits;
/// type 3 has no reference tag to check (as QEMU's nvme_check_prinfo).
fn check_prinfo(fmt: Format, p: Prinfo, ilbrt: u64, slba: u64, nsid: u32) -> Result<(), Failure> {
    if !p.checks.reftag {
        return Ok(());
    }
    match fmt.pi {
        1 if slba & ref_mask(fmt.guard) != ilbrt => {
            Err(fail(Status::INVALID_PI.dnr(), loc::CDW12, slba, nsid))
        }
        3 => Err(fail(Status::INVALID_PI, loc::CDW12, slba, nsid)),
        _ => Ok(()),
    }
}

/// An end-to-end check failure at block `e.block()` of a command at `slba`.
fn pi_failure(e: PiError, slba: u64, nsid: u32) -> Failure {
    let status = match e {
        PiError::Guard(_) => Status::GUARD_CHECK_ERROR,
        PiError::App(_) => Status::APP_TAG_CHECK_ERROR,
        PiError::Ref(_) => Status::REF_TAG_CHECK_ERROR,
    };
    fail(status.dnr(), loc::CDW12, slba.wrapping_add(e.block()), nsid)
}

/// True when PRACT moves no metadata: MS is exactly the PI (stripped on
/// read, inserted on write).
fn pract_only(fmt: Format, p: Prinfo) -> bool {
    p.pract && usize::from(fmt.ms) == fmt.pi_size()
}

fn store_failure(e: i32, write: bool, lba: u64, nsid: u32, ctx: &mut IoContext<'_>) -> Failure {
    file_failure(e, write, lba, nsid, ctx.smart)
}

/// Every block of a namespace whose store was let go reads deallocated.
static NOWHERE: Store = Store::Nowhere;

/// The namespace's store for one command (no reference count taken).
fn store_of(ns: &Namespace) -> StoreRef {
    StoreRef(ns.meta.store_guard())
}

/// A loaded store: derefs to it, or to [`NOWHERE`].
struct StoreRef(arc_swap::Guard<Option<std::sync::Arc<Store>>>);

impl std::ops::Deref for StoreRef {
    type Target = Store;
    fn deref(&self) -> &Store {
        self.0.as_deref().unwrap_or(&NOWHERE)
    }
}

/// The guards of the command's data into `b.guards`: in guest memory
/// (`segs`, when `in_place`) or in `b.data`.
///
/// # Safety
/// With `in_place`, every segment is host memory translated against a
/// snapshot the caller holds.
unsafe fn data_guards(segs: &[Segment], in_place: bool, fmt: Format, lbs: usize, b: &mut Bufs) {
    if !in_place {
        check::guards(fmt, lbs, &[&b.data], &b.md, &mut b.guards);
    } else if let [one] = segs {
        // The usual case, one contiguous piece: no list to build.
        if let super::segment::Target::Host(p) = one.target {
            // SAFETY: the caller's contract.
            let data = unsafe { std::slice::from_raw_parts(p.cast_const(), one.len) };
            check::guards(fmt, lbs, &[data], &b.md, &mut b.guards);
        }
    } else if segs.len() <= STACK_PIECES {
        // A few pieces (the pages of a transfer up to 64 KiB): listed on
        // the stack, no allocation per command.
        let mut pieces: [&[u8]; STACK_PIECES] = [&[]; STACK_PIECES];
        for (piece, s) in pieces.iter_mut().zip(segs) {
            if let super::segment::Target::Host(p) = s.target {
                // SAFETY: the caller's contract.
                *piece = unsafe { std::slice::from_raw_parts(p.cast_const(), s.len) };
            }
        }
        check::guards(fmt, lbs, &pieces[..segs.len()], &b.md, &mut b.guards);
    } else {
        let mut pieces = Vec::with_capacity(segs.len());
        // SAFETY: the caller's contract.
        unsafe { host_slices(segs, &mut pieces) };
        check::guards(fmt, lbs, &pieces, &b.md, &mut b.guards);
    }
}

/// The pieces of data [`data_guards`] lists on the stack.
const STACK_PIECES: usize = 17;

/// XORs the last byte of `field` in the first block's PI (corrupt-pi).
fn corrupt(fmt: Format, md: &mut [u8], (field, xor): (Field, u8)) {
    let at = fmt.pi_offset() + tuple::last_byte(fmt.guard, field);
    if let Some(b) = md.get_mut(at) {
        *b ^= xor;
    }
}

/// One Read or Write on a namespace with metadata, as `rw` decoded it.
#[derive(Clone, Copy)]
struct Rw<'s> {
    store: &'s Store,
    fmt: Format,
    p: Prinfo,
    t: Tags,
    slba: u64,
    nlb: u64,
    /// Metadata bytes per block that move between host and device (0 when
    /// PRACT strips or inserts all of it).
    moved_md: usize,
}

/// Read (02h) and Write (01h) on a namespace with metadata.
pub fn rw(ctx: &mut IoContext<'_>, sqe: &Sqe, ns: &Namespace, read: bool) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    if !read {
        writable(ns, 0, nsid)?;
    }
    let fmt = ns.meta.format();
    let (slba, nlb) = lba_range(ns, sqe)?;
    let store = store_of(ns);
    // The first block's metadata is a cache miss at a random LBA: start it
    // now, so it arrives while the data pointer is walked.
    store.prefetch(slba, fmt);
    if read {
        super::io::unmarked(ns, slba, nlb, nsid, ctx.smart)?;
    }
    let p = prinfo(fmt, sqe.cdw(12), 26);
    let t = tags(fmt, sqe);
    check_prinfo(fmt, p, t.ilbrt, slba, nsid)?;
    let shift = ns.lba_shift();
    let lbs = 1usize << shift;
    let ms = usize::from(fmt.ms);
    let moved_md = if pract_only(fmt, p) { 0 } else { ms };
    // nlb <= 65536, lbs + ms <= 4160: no overflow.
    let unit = if fmt.extended { lbs + moved_md } else { lbs };
    let len = nlb * unit as u64;
    if ctx.mdts_bytes != 0 && len > ctx.mdts_bytes {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::CDW12, slba, nsid));
    }
    super::io::data_pointer(ctx, sqe, len, read, slba)?;
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    with_bufs(|b| {
        if !fmt.extended && moved_md != 0 {
            meta::metadata_pointer(ctx.mem, sqe, nlb * ms as u64, read, slba, &mut b.msegs)?;
        }
        let c = Rw {
            store: &store,
            fmt,
            p,
            t,
            slba,
            nlb,
            moved_md,
        };
        if read {
            read_cmd(ctx, sqe, ns, &c, b)?;
        } else {
            write_cmd(ctx, sqe, ns, &c, b)?;
            if fua {
                ns.backend
                    .flush()
                    .and_then(|()| store.flush())
                    .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
            }
            super::io::rewritten(ns, slba, nlb, fua, nsid, ctx.smart)?;
        }
        super::io::count(ctx.smart, read, nlb << shift);
        Ok(0)
    })
}

fn read_cmd(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    c: &Rw<'_>,
    b: &mut Bufs,
) -> Result<(), Failure> {
    let Rw {
        store,
        fmt,
        p,
        t,
        slba,
        nlb,
        moved_md,
    } = *c;
    let nsid = sqe.nsid();
    let shift = ns.lba_shift();
    let lbs = 1usize << shift;
    let ms = usize::from(fmt.ms);
    let off = slba << shift;
    let dlen = (nlb as usize) << shift;
    b.md.clear();
    b.md.resize(nlb as usize * ms, 0);
    store
        .read(slba, fmt, &mut b.md)
        .map_err(|e| store_failure(e, false, slba, nsid, ctx))?;
    let strip = moved_md == 0;
    let checked = fmt.pi != 0 && !p.checks.none();
    // Where the data is, for the guards: in place in guest memory (the
    // usual case), or in b.data.
    let in_place = !fmt.extended && all_host(ctx.segs);
    if in_place {
        rw_segments(ctx, sqe, ns, off, true)?;
    } else {
        meta::read_data(ns, off, dlen, &mut b.data)
            .map_err(|e| file_failure(e, false, slba, nsid, ctx.smart))?;
    }
    if let (Some(c), true) = (ctx.corrupt_pi, strip) {
        // Nothing of the PI reaches the host: corrupt what the device
        // checks, so PRCHK reports it.
        corrupt(fmt, &mut b.md, c);
    }
    if checked {
        // SAFETY: in_place: every segment is host memory translated against
        // ctx.mem, which outlives this call.
        unsafe { data_guards(ctx.segs, in_place, fmt, lbs, b) };
        check::check(fmt, &b.guards, &b.md, p.checks, t).map_err(|e| pi_failure(e, slba, nsid))?;
    }
    if let (Some(c), false, true) = (ctx.corrupt_pi, strip, fmt.pi != 0) {
        corrupt(fmt, &mut b.md, c);
    }
    if fmt.extended {
        b.inter.clear();
        for i in 0..nlb as usize {
            b.inter.extend_from_slice(&b.data[i * lbs..(i + 1) * lbs]);
            b.inter.extend_from_slice(&b.md[i * ms..i * ms + moved_md]);
        }
        return meta::scatter(ctx, ctx.segs, &b.inter, slba, nsid);
    }
    if !in_place {
        meta::scatter(ctx, ctx.segs, &b.data, slba, nsid)?;
    }
    if !strip {
        meta::scatter(ctx, &b.msegs, &b.md, slba, nsid)?;
    }
    Ok(())
}

fn write_cmd(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    c: &Rw<'_>,
    b: &mut Bufs,
) -> Result<(), Failure> {
    let Rw {
        store,
        fmt,
        p,
        t,
        slba,
        nlb,
        moved_md,
    } = *c;
    let nsid = sqe.nsid();
    let shift = ns.lba_shift();
    let lbs = 1usize << shift;
    let ms = usize::from(fmt.ms);
    let off = slba << shift;
    let n = nlb as usize;
    b.md.clear();
    let in_place = !fmt.extended && all_host(ctx.segs);
    if fmt.extended {
        let segs = std::mem::take(ctx.segs);
        let r = meta::gather(ctx, &segs, &mut b.inter, slba, nsid);
        *ctx.segs = segs;
        r?;
        let unit = lbs + moved_md;
        b.data.clear();
        for i in 0..n {
            let blk = &b.inter[i * unit..(i + 1) * unit];
            b.data.extend_from_slice(&blk[..lbs]);
            b.md.extend_from_slice(&blk[lbs..]);
        }
    } else {
        if moved_md != 0 {
            let msegs = std::mem::take(&mut b.msegs);
            let r = meta::gather(ctx, &msegs, &mut b.md, slba, nsid);
            b.msegs = msegs;
            r?;
        }
        if !in_place {
            let segs = std::mem::take(ctx.segs);
            let r = meta::gather(ctx, &segs, &mut b.data, slba, nsid);
            *ctx.segs = segs;
            r?;
        }
    }
    if moved_md == 0 {
        b.md.resize(n * ms, 0);
    }
    let pi_work = fmt.pi != 0 && (p.pract || !p.checks.none());
    // PRACT in place: nothing can fail on the PI, so the guards are
    // computed after the copy, from guest memory the copy just read (hot
    // in the cache), while the copy's stores to the namespace drain.
    // Checks must pass before anything is written: guards first.
    let guards_after = p.pract && in_place;
    if pi_work && !guards_after {
        // SAFETY: as in read_cmd.
        unsafe { data_guards(ctx.segs, in_place, fmt, lbs, b) };
        if p.pract {
            check::generate(fmt, &b.guards, &mut b.md, t);
        } else {
            check::check(fmt, &b.guards, &b.md, p.checks, t)
                .map_err(|e| pi_failure(e, slba, nsid))?;
        }
    }
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    ns.will_write(off, nlb << shift, fua);
    ns.meta.will_write(&ns.cache, slba, nlb, fua);
    if in_place {
        rw_segments(ctx, sqe, ns, off, false)?;
    } else {
        meta::write_data(ns, off, &b.data)
            .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
    }
    if pi_work && guards_after {
        // SAFETY: as in read_cmd.
        unsafe { data_guards(ctx.segs, in_place, fmt, lbs, b) };
        check::generate(fmt, &b.guards, &mut b.md, t);
    }
    store
        .write(slba, fmt, &b.md)
        .map_err(|e| store_failure(e, true, slba, nsid, ctx))
}

/// Reads the stored data and metadata of `nlb` blocks at `slba` into
/// `b.data` and `b.md`, and checks the PI per `p` with `t`.
#[allow(clippy::too_many_arguments)]
fn read_checked(
    ctx: &mut IoContext<'_>,
    ns: &Namespace,
    store: &Store,
    fmt: Format,
    p: Prinfo,
    t: Tags,
    (slba, nlb): (u64, u64),
    nsid: u32,
    b: &mut Bufs,
) -> Result<(), Failure> {
    let shift = ns.lba_shift();
    let ms = usize::from(fmt.ms);
    meta::read_data(ns, slba << shift, (nlb as usize) << shift, &mut b.data)
        .map_err(|e| file_failure(e, false, slba, nsid, ctx.smart))?;
    b.md.clear();
    b.md.resize(nlb as usize * ms, 0);
    store
        .read(slba, fmt, &mut b.md)
        .map_err(|e| store_failure(e, false, slba, nsid, ctx))?;
    if fmt.pi != 0 && !p.checks.none() {
        check::guards(fmt, 1 << shift, &[&b.data], &b.md, &mut b.guards);
        check::check(fmt, &b.guards, &b.md, p.checks, t).map_err(|e| pi_failure(e, slba, nsid))?;
    }
    Ok(())
}

/// 0Ch Verify: the stored PI checked per PRCHK; no data moves. PRACT
/// shall be cleared (NVM Command Set 1.0, Figure 55): Invalid Field.
pub fn verify(ctx: &mut IoContext<'_>, sqe: &Sqe, ns: &Namespace) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    let fmt = ns.meta.format();
    let (slba, nlb) = lba_range(ns, sqe)?;
    let p = prinfo(fmt, sqe.cdw(12), 26);
    if p.pract {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::CDW12, slba, nsid));
    }
    let t = tags(fmt, sqe);
    check_prinfo(fmt, p, t.ilbrt, slba, nsid)?;
    if fmt.pi == 0 || p.checks.none() {
        return Ok(0);
    }
    let store = store_of(ns);
    with_bufs(|b| read_checked(ctx, ns, &store, fmt, p, t, (slba, nlb), nsid, b))?;
    Ok(0)
}

/// 05h Compare: the stored PI checked per PRCHK, then the host's data and
/// the non-PI bytes of its metadata against what is stored. PRACT is not
/// allowed (Invalid Field).
pub fn compare(ctx: &mut IoContext<'_>, sqe: &Sqe, ns: &Namespace) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    let fmt = ns.meta.format();
    let (slba, nlb) = lba_range(ns, sqe)?;
    let p = prinfo(fmt, sqe.cdw(12), 26);
    if p.pract {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::CDW12, slba, nsid));
    }
    let t = tags(fmt, sqe);
    check_prinfo(fmt, p, t.ilbrt, slba, nsid)?;
    let shift = ns.lba_shift();
    let lbs = 1usize << shift;
    let ms = usize::from(fmt.ms);
    let n = nlb as usize;
    let unit = if fmt.extended { lbs + ms } else { lbs };
    let len = nlb * unit as u64;
    if ctx.mdts_bytes != 0 && len > ctx.mdts_bytes {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::CDW12, slba, nsid));
    }
    super::io::data_pointer(ctx, sqe, len, false, slba)?;
    let store = store_of(ns);
    with_bufs(|b| {
        if !fmt.extended {
            meta::metadata_pointer(ctx.mem, sqe, nlb * ms as u64, false, slba, &mut b.msegs)?;
        }
        // The host's side first: a failed fetch changes nothing.
        let segs = std::mem::take(ctx.segs);
        let r = meta::gather(ctx, &segs, &mut b.inter, slba, nsid);
        *ctx.segs = segs;
        r?;
        let mut host_md = Vec::new();
        if fmt.extended {
            let mut data = Vec::with_capacity(n * lbs);
            for i in 0..n {
                data.extend_from_slice(&b.inter[i * unit..i * unit + lbs]);
                host_md.extend_from_slice(&b.inter[i * unit + lbs..(i + 1) * unit]);
            }
            b.inter = data;
        } else {
            let msegs = std::mem::take(&mut b.msegs);
            let r = meta::gather(ctx, &msegs, &mut host_md, slba, nsid);
            b.msegs = msegs;
            r?;
        }
        read_checked(ctx, ns, &store, fmt, p, t, (slba, nlb), nsid, b)?;
        ctx.smart.bytes_read += nlb << shift;
        ctx.smart.host_read_commands += 1;
        let (po, ps) = (fmt.pi_offset(), fmt.pi_size());
        let md_equal = (0..n).all(|i| {
            (0..ms).all(|k| (k >= po && k < po + ps) || host_md[i * ms + k] == b.md[i * ms + k])
        });
        if b.inter == b.data && md_equal {
            Ok(0)
        } else {
            Err(fail(Status::COMPARE_FAILURE.dnr(), loc::CDW10, slba, nsid))
        }
    })
}

/// 08h Write Zeroes on a namespace with metadata. PRCHK shall be 000b
/// (Invalid Protection Information otherwise, as QEMU). DEAC: the blocks
/// are deallocated, metadata too (it reads back all FFh); PRACT=0: data
/// and metadata zero; PRACT=1: data and non-PI metadata zero, PI inserted.
pub fn write_zeroes(ctx: &mut IoContext<'_>, sqe: &Sqe, ns: &Namespace) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    let fmt = ns.meta.format();
    let (slba, nlb) = lba_range(ns, sqe)?;
    writable(ns, slba, nsid)?;
    let p = prinfo(fmt, sqe.cdw(12), 26);
    if !p.checks.none() {
        return Err(fail(Status::INVALID_PI.dnr(), loc::CDW12, slba, nsid));
    }
    let shift = ns.lba_shift();
    let (off, len) = (slba << shift, nlb << shift);
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    ns.will_write(off, len, fua);
    ns.meta.will_write(&ns.cache, slba, nlb, fua);
    let store = store_of(ns);
    let ms = u32::from(fmt.ms);
    let deac = sqe.cdw(12) & (1 << 25) != 0;
    // SAFETY: the range check keeps it inside the namespace.
    unsafe {
        if deac {
            ns.backend.deallocate(off, len)
        } else {
            ns.backend.zero(off, len)
        }
    }
    .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
    let r = if deac {
        store.deallocate(slba, nlb, fmt)
    } else {
        with_bufs(|b| {
            b.md.clear();
            b.md.resize(nlb as usize * ms as usize, 0);
            if p.pract {
                let zero = vec![0u8; 1 << shift];
                let prefix = if fmt.first { 0 } else { fmt.pi_offset() };
                let mut r = crate::pi::crc::Running::new(fmt.guard);
                r.update(&zero);
                r.update(&zero[..prefix.min(zero.len())]);
                b.guards.clear();
                b.guards.resize(nlb as usize, r.finish());
                check::generate(fmt, &b.guards, &mut b.md, tags(fmt, sqe));
            }
            store.write(slba, fmt, &b.md)
        })
    };
    r.map_err(|e| store_failure(e, true, slba, nsid, ctx))?;
    if fua {
        ns.backend
            .flush()
            .and_then(|()| store.flush())
            .map_err(|e| file_failure(e, true, slba, nsid, ctx.smart))?;
    }
    ctx.smart.host_write_commands += 1;
    Ok(0)
}

/// Dataset Management deallocated `nlb` blocks at `slba`: their metadata
/// goes too (reads back all FFh).
pub fn deallocated(ns: &Namespace, slba: u64, nlb: u64) -> Result<(), i32> {
    ns.meta.will_write(&ns.cache, slba, nlb, false);
    match ns.meta.store() {
        Some(s) => s.deallocate(slba, nlb, ns.meta.format()),
        None => Ok(()),
    }
}

/// 19h Copy on a namespace with metadata: `ranges` (SLBA, NLB, source
/// range entry) checked by `nvm::copy`, to consecutive LBAs from `sdlba`.
/// Each source range's PI is checked per PRINFOR with its entry's
/// EILBRT/ELBAT/ELBATM; the destination's is inserted (PRINFOW PRACT) or
/// checked per PRINFOW against ILBRT/LBAT/LBATM; metadata moves with the
/// data.
pub fn copy(
    ctx: &mut IoContext<'_>,
    sqe: &Sqe,
    ns: &Namespace,
    sdlba: u64,
    ranges: &[(u64, u64, Tags)],
) -> Result<u32, Failure> {
    let nsid = sqe.nsid();
    let fmt = ns.meta.format();
    let pr = prinfo(fmt, sqe.cdw(12), 12);
    let pw = prinfo(fmt, sqe.cdw(12), 26);
    if pr.pract != pw.pract {
        return Err(fail(Status::INVALID_FIELD.dnr(), loc::CDW12, sdlba, nsid));
    }
    let tw = tags(fmt, sqe);
    check_prinfo(fmt, pw, tw.ilbrt, sdlba, nsid)?;
    for &(slba, _, t) in ranges {
        check_prinfo(fmt, pr, t.ilbrt, slba, nsid)?;
    }
    let shift = ns.lba_shift();
    let store = store_of(ns);
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let fua = sqe.cdw(12) & (1 << 30) != 0;
    with_bufs(|b| {
        // Everything is read and checked before anything is written.
        let mut data = Vec::new();
        let mut md = Vec::new();
        for &(slba, nlb, t) in ranges {
            read_checked(ctx, ns, &store, fmt, pr, t, (slba, nlb), nsid, b)?;
            data.extend_from_slice(&b.data);
            md.extend_from_slice(&b.md);
        }
        if fmt.pi != 0 && (pw.pract || !pw.checks.none()) {
            check::guards(fmt, 1 << shift, &[&data], &md, &mut b.guards);
            if pw.pract {
                check::generate(fmt, &b.guards, &mut md, tw);
            } else {
                check::check(fmt, &b.guards, &md, pw.checks, tw)
                    .map_err(|e| pi_failure(e, sdlba, nsid))?;
            }
        }
        ns.will_write(sdlba << shift, total << shift, fua);
        ns.meta.will_write(&ns.cache, sdlba, total, fua);
        meta::write_data(ns, sdlba << shift, &data)
            .map_err(|e| file_failure(e, true, sdlba, nsid, ctx.smart))?;
        store
            .write(sdlba, fmt, &md)
            .map_err(|e| store_failure(e, true, sdlba, nsid, ctx))?;
        if fua {
            ns.backend
                .flush()
                .and_then(|()| store.flush())
                .map_err(|e| file_failure(e, true, sdlba, nsid, ctx.smart))?;
        }
        ctx.smart.bytes_written += total << shift;
        ctx.smart.host_write_commands += 1;
        Ok(0)
    })
}

/// The (E)ILBRT/(E)LBAT/(E)LBATM of a Copy source range entry: format 0
/// (32 bytes: EILBRT 27:24 little-endian, ELBAT 29:28, ELBATM 31:30) or
/// format 1 (40 bytes: the 48-bit EILBRT in the low bytes of the 80-bit
/// ELBST/EILBRT at 35:26, most significant byte first as libnvme and QEMU
/// write it; ELBAT 37:36, ELBATM 39:38).
pub fn entry_tags(format: u32, e: &[u8]) -> Tags {
    let le16 = |a: usize| u16::from_le_bytes([e[a], e[a + 1]]);
    if format == 1 {
        let ilbrt = e[30..36].iter().fold(0u64, |v, &x| v << 8 | u64::from(x));
        Tags {
            ilbrt,
            lbat: le16(36),
            lbatm: le16(38),
        }
    } else {
        Tags {
            ilbrt: u64::from(u32::from_le_bytes([e[24], e[25], e[26], e[27]])),
            lbat: le16(28),
            lbatm: le16(30),
        }
    }
}

/// The copy descriptor format a namespace takes: 1 for the 64b guard, 0
/// otherwise (NVM Command Set 1.0, Figure 30).
pub fn copy_format(ns: &Namespace) -> u32 {
    let fmt = ns.meta.format();
    u32::from(fmt.pi != 0 && fmt.guard == Guard::Crc64)
}
