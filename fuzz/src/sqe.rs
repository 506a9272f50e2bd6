//! The `sqe` target: input bytes 0-63 are an SQE submitted on I/O queue 1
//! of a running engine, the rest is guest memory (PRP lists, SGL segments,
//! data, range lists) laid out by [`Rig::load`]. An input that starts with
//! `LOSS` is a loss input instead ([`crate::loss`]): several SQEs around a
//! truncation of guest memory. After each completion the oracle checks,
//! and panics (a libFuzzer crash) on any breach:
//!
//! - the CQE names the command (CID, SQ ID, SQ head) and its status is one
//!   the spec allows for the opcode ([`model::status_allowed`]);
//! - with PRPs, the status is the one the reference walk
//!   ([`model::prp_pieces`]) predicts, and a successful Read put exactly the
//!   namespace's bytes where the PRPs point;
//! - guest memory changes only under a Read, the read-only region never;
//! - each namespace that stores data (RAM, file, custom), read back
//!   through the device, equals what the command may have made of it
//!   ([`model::namespace_after`]): unchanged after any failure or any
//!   command that does not write, a Write only inside [SLBA, SLBA+NLB)
//!   (with PRPs: exactly the host's data);
//! - nothing panics, no access leaves guest memory (guard pages around the
//!   fd-backed regions, a bounds-checking fake client behind the remote
//!   one) or a namespace (the custom namespace's storage checks each call),
//!   and every command completes within five seconds;
//! - a Write Uncorrectable that succeeded marked exactly its LBAs (a Read
//!   of the last one is Unrecovered Read Error with DNR) and a Write Zeroes
//!   over them (a Zone Reset on the zoned namespace) unmarks them; one that
//!   failed marked nothing ([`check_uncorrectable`]).
//!
//! An input that starts with `SANI` runs its SQE while a sanitize runs
//! ([`crate::sanitize`]).

use std::sync::{Mutex, MutexGuard, OnceLock};

use nvmefast::spec::opcode::io as op;
use nvmefast::spec::{Cqe, Sqe, Status};

use crate::loss;
use crate::model::{self, Region};
use crate::rig::{Images, Rig};
use crate::sigbus;

/// Set (to anything) to make the rig touch a truncated mapping outside
/// guest memory once it is built: the SIGBUS must travel through the guard
/// and the probe to libFuzzer's handler, which reports a crash. For the
/// test of that chain only.
pub const STRAY_SIGBUS_ENV: &str = "NVMEFAST_FUZZ_STRAY_SIGBUS";

/// The process's rig, built at the first input.
pub fn rig() -> MutexGuard<'static, Rig> {
    static RIG: OnceLock<Mutex<Rig>> = OnceLock::new();
    RIG.get_or_init(|| {
        let rig = Rig::new();
        for g in &rig.guards {
            if !g.fenced {
                eprintln!("sqe: no guard pages around {g:x?}: overruns there are not caught");
            }
        }
        if std::env::var_os(STRAY_SIGBUS_ENV).is_some() {
            eprintln!("sqe: touching a truncated mapping outside guest memory");
            sigbus::touch_stray();
            eprintln!("sqe: survived a SIGBUS outside guest memory: nothing handled it");
        }
        Mutex::new(rig)
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// LBA size and byte size of namespace `nsid`, if it exists.
pub(crate) fn namespace(nsid: u32) -> Option<(u64, u64, &'static str)> {
    model::NAMESPACES
        .iter()
        .find(|n| n.0 == nsid)
        .map(|&(_, backend, size, lbs)| (u64::from(lbs), size, backend))
}

/// Runs one input; panics when the device breaks the oracle.
pub fn run_one(data: &[u8]) {
    if let Some(rest) = data.strip_prefix(loss::MAGIC) {
        loss::run(rest);
        return;
    }
    if let Some(rest) = data.strip_prefix(crate::sanitize::MAGIC) {
        crate::sanitize::run(rest);
        return;
    }
    let Some((raw, guest)) = data.split_first_chunk::<64>() else {
        return;
    };
    let sqe = Sqe::from_bytes(raw);
    let mut rig = rig();
    let images = rig.load(guest);
    let cqe = rig.submit(&sqe);
    let fail = |why: String| -> ! { panic!("{why}\n  {sqe:?}\n  {cqe:?}") };
    if let Err(why) = check(&rig, &images, &sqe, &cqe) {
        fail(why);
    }
    if let Err(why) = check_uncorrectable(&mut rig, &sqe, cqe.status()) {
        fail(why);
    }
    let before = rig.pattern_images();
    let after = check_namespaces(&mut rig, &images, &sqe, cqe.status(), &before, None)
        .unwrap_or_else(|why| fail(why));
    if after != before {
        rig.restore_namespaces();
    }
    rig.reset_zones();
}

/// The CQE, the status and guest memory after one command, whose guest
/// memory was `images` before it.
pub(crate) fn check(rig: &Rig, images: &Images, sqe: &Sqe, cqe: &Cqe) -> Result<(), String> {
    check_completion(rig, sqe, cqe)?;
    check_status(images, rig, sqe, cqe.status())?;
    check_guest_memory(rig, images, sqe, cqe.status())
}

/// After a Write Uncorrectable (`status` its completion): a success marked
/// exactly its LBA range, whose last block then reads back as
/// Unrecovered Read Error (DNR), and a Write Zeroes over the range (the
/// zoned namespace: a reset of every zone) unmarks it, the namespaces
/// restored after; a failure marked nothing. No mark outlives the check,
/// so every later read-back sees data.
pub(crate) fn check_uncorrectable(rig: &mut Rig, sqe: &Sqe, status: Status) -> Result<(), String> {
    if sqe.opcode() != op::WRITE_UNCORRECTABLE || sqe.fuse() != 0 {
        return Ok(());
    }
    let nsid = sqe.nsid();
    let marked = rig.engine.uncorrectable_ranges(nsid).unwrap_or_default();
    if status != Status::SUCCESS {
        return match marked.is_empty() {
            true => Ok(()),
            false => Err(format!("a failed Write Uncorrectable marked {marked:?}")),
        };
    }
    let (slba, nlb) = model::lba_range(sqe);
    if marked != [(slba, nlb)] {
        return Err(format!("marked {marked:?}, expected [({slba}, {nlb})]"));
    }
    let read = rig.read_status(nsid, slba + nlb - 1);
    if read != Status::UNRECOVERED_READ_ERROR.dnr() {
        return Err(format!(
            "a Read of marked LBA {} completed {read:?}",
            slba + nlb - 1
        ));
    }
    if nsid == model::ZONED.0 {
        rig.reset_zones();
    } else {
        let mut wz = Sqe::new(op::WRITE_ZEROES, 0xfff4, nsid);
        wz.set_lba_range(slba, nlb as u32);
        let c = rig.submit(&wz);
        if c.status() != Status::SUCCESS {
            return Err(format!(
                "Write Zeroes over the marks completed {:?}",
                c.status()
            ));
        }
        rig.restore_namespaces();
    }
    match rig.engine.uncorrectable_ranges(nsid) {
        Some(left) if left.is_empty() => Ok(()),
        left => Err(format!("still marked after it was written: {left:?}")),
    }
}

/// Reads every namespace that stores data back through the device and
/// checks it against what the command may have made of `before` (one
/// image per [`Rig::patterns`] entry); returns what it read. A Write whose
/// data came from memory that was lost under it (`lost_write`: its LBA
/// range) failed, but may have changed that range (as a Write that fails
/// mid-transfer on real hardware may).
pub(crate) fn check_namespaces(
    rig: &mut Rig,
    images: &Images,
    sqe: &Sqe,
    status: Status,
    before: &[Vec<u8>],
    lost_write: Option<(usize, usize)>,
) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (i, before) in before.iter().enumerate() {
        let (nsid, lbs, _) = rig.patterns[i];
        let after = rig.read_namespace(nsid, lbs, before.len());
        let expect = if status == Status::SUCCESS {
            model::namespace_after(images, sqe, nsid, lbs, before)
        } else if let (Some((lo, hi)), true) = (lost_write, sqe.nsid() == nsid) {
            Ok(model::Expect::Within(lo, hi))
        } else {
            Ok(model::Expect::Exact(before.clone()))
        };
        match expect.map(|e| e.violation(before, &after)) {
            Ok(None) => {}
            Ok(Some(why)) | Err(why) => return Err(format!("namespace {nsid}: {why}")),
        }
        out.push(after);
    }
    Ok(out)
}

pub(crate) fn check_completion(rig: &Rig, sqe: &Sqe, cqe: &Cqe) -> Result<(), String> {
    if cqe.cid != sqe.cid() || cqe.sqid != 1 {
        return Err(format!("completion names CID {} SQ {}", cqe.cid, cqe.sqid));
    }
    if cqe.sqhd != rig.sqhd() {
        return Err(format!(
            "SQ head {} in the CQE, expected {}",
            cqe.sqhd,
            rig.sqhd()
        ));
    }
    Ok(())
}

/// The status against the allowed set and, where the model can tell, the
/// exact status.
fn check_status(g: &Images, rig: &Rig, sqe: &Sqe, status: Status) -> Result<(), String> {
    if !model::status_allowed(sqe, status) {
        return Err(format!(
            "status {status:?} is not allowed for opcode {:#04x}",
            sqe.opcode()
        ));
    }
    let known = model::status_allowed(sqe, Status::SUCCESS);
    let want = |s: Status, why: &str| {
        if status == s {
            Ok(())
        } else {
            Err(format!("status {status:?}, expected {s:?}: {why}"))
        }
    };
    if sqe.fuse() != 0 {
        return want(
            Status::INVALID_FIELD.dnr(),
            "fused operations are not supported",
        );
    }
    if !known || sqe.nsid() == model::ZONED.0 {
        return Ok(());
    }
    if model::ZONE_OPCODES.contains(&sqe.opcode()) && namespace(sqe.nsid()).is_some() {
        return want(
            Status::INVALID_OPCODE.dnr(),
            "a zone command on a conventional namespace",
        );
    }
    let Some((lbs, size, backend)) = namespace(sqe.nsid()) else {
        return want(Status::INVALID_NAMESPACE.dnr(), "no such namespace");
    };
    let (slba, nlb) = model::lba_range(sqe);
    let ranged = matches!(
        sqe.opcode(),
        op::READ | op::WRITE | op::COMPARE | op::WRITE_ZEROES | op::VERIFY
    );
    let in_range = slba
        .checked_add(nlb)
        .and_then(|e| e.checked_mul(lbs))
        .is_some_and(|end| end <= size);
    if ranged && !in_range {
        return want(
            Status::LBA_OUT_OF_RANGE.dnr(),
            "LBA range past the namespace",
        );
    }
    if sqe.nsid() == model::PI_NSID {
        // The metadata pointer and the PI checks decide from here: any
        // allowed status, with the namespace and memory checks below.
        return Ok(());
    }
    let transfers = matches!(sqe.opcode(), op::READ | op::WRITE | op::COMPARE);
    let len = nlb * lbs;
    if !transfers || sqe.psdt() != 0 || len > model::MDTS_BYTES {
        return Ok(());
    }
    let read = sqe.opcode() == op::READ;
    match model::prp_pieces(g, sqe.prp1(), sqe.prp2(), len, read) {
        Err(e) => match e.status() {
            Some(s) => want(s, &format!("reference PRP walk: {e:?}")),
            None => Ok(()),
        },
        // The null namespace moves no data: it never touches the pages.
        Ok(pieces) if backend != "null" && model::faults(g, &pieces) => want(
            Status::DATA_TRANSFER_ERROR.dnr(),
            "the data lies in guest memory past its file's end",
        ),
        Ok(pieces) if sqe.opcode() == op::COMPARE && backend != "null" => {
            let data = model::gather(g, &pieces);
            let (_, _, ref image) = rig.patterns.iter().find(|p| p.0 == sqe.nsid()).unwrap();
            let off = (slba * lbs) as usize;
            if data[..] == image[off..off + len as usize] {
                want(Status::SUCCESS, "the data compares equal")
            } else {
                want(Status::COMPARE_FAILURE.dnr(), "the data differs")
            }
        }
        Ok(_) => want(Status::SUCCESS, "the reference PRP walk accepts it"),
    }
}

/// Guest memory after the command: B never changes; A, C and a loss
/// input's E (what is left of it) change only under a successful Read, and
/// then (with PRPs) exactly as the model says.
pub(crate) fn check_guest_memory(
    rig: &Rig,
    before: &Images,
    sqe: &Sqe,
    status: Status,
) -> Result<(), String> {
    let mut a = vec![0u8; model::A_LEN];
    let mut b = vec![0u8; model::B_LEN];
    rig.a.read(model::A_IOVA, &mut a);
    rig.b.read(model::B_IOVA, &mut b);
    let c = rig.c.bytes.lock().unwrap().clone();
    let e = rig.e_bytes();
    let diff = |x: &[u8], y: &[u8]| {
        if x == y {
            return None;
        }
        (0..x.len()).find(|&i| x[i] != y[i])
    };
    if let Some(i) = diff(&before.b, &b) {
        return Err(format!("read-only region B changed at offset {i:#x}"));
    }
    let read = sqe.opcode() == op::READ && sqe.fuse() == 0;
    if sqe.nsid() == model::ZONED.0 && sqe.fuse() == 0 {
        // The zoned namespace's reads and zone reports are not modelled:
        // only B, checked above, is promised.
        return Ok(());
    }
    if read && status != Status::SUCCESS {
        // A failed Read leaves its data buffer undefined (NVMe Base 4.1.1).
        return Ok(());
    }
    let mut want = before.clone();
    if read {
        let Some((lbs, _, backend)) = namespace(sqe.nsid()) else {
            return Err("a Read of a missing namespace succeeded".into());
        };
        if sqe.psdt() != 0 {
            return Ok(());
        }
        if sqe.nsid() == model::PI_NSID {
            // Its metadata lands where MPTR points: region A or C too.
            return Ok(());
        }
        let (slba, nlb) = model::lba_range(sqe);
        let Ok(pieces) = model::prp_pieces(before, sqe.prp1(), sqe.prp2(), nlb * lbs, true) else {
            return Ok(());
        };
        if backend != "null" {
            let (_, _, ref image) = rig.patterns.iter().find(|p| p.0 == sqe.nsid()).unwrap();
            let mut off = (slba * lbs) as usize;
            for (iova, len) in pieces {
                let (r, at) = model::region_of(iova, len as u64).unwrap();
                let dst = match r {
                    Region::A => &mut want.a,
                    Region::C => &mut want.c,
                    Region::E => &mut want.e,
                    Region::B | Region::D => unreachable!("the walk refused them"),
                };
                dst[at..at + len].copy_from_slice(&image[off..off + len]);
                off += len;
            }
        }
    }
    if let Some(i) = diff(&want.a, &a) {
        return Err(format!(
            "region A offset {i:#x} is {:#04x}, expected {:#04x}",
            a[i], want.a[i]
        ));
    }
    if let Some(i) = diff(&want.c, &c) {
        return Err(format!(
            "remote region C offset {i:#x} is {:#04x}, expected {:#04x}",
            c[i], want.c[i]
        ));
    }
    if let Some(e) = e.filter(|e| e.len() == want.e.len()) {
        if let Some(i) = diff(&want.e, &e) {
            return Err(format!(
                "region E offset {i:#x} is {:#04x}, expected {:#04x}",
                e[i], want.e[i]
            ));
        }
    }
    Ok(())
}
