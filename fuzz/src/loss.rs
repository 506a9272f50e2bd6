//! Loss inputs of the `sqe` target: guest memory that shrinks under the
//! device. Region E, an unsealed memfd (so the engine's SIGBUS guard,
//! `nvmefast::mem::guard`, watches its mapping), is mapped for the input,
//! truncated under the device before, between or after its commands, and
//! unmapped at the end. The input:
//!
//! ```text
//! 0..4   "LOSS"
//! 4      bits 0-1: commands - 1 (1 to 4)
//!        bit 2: put the rig's own SIGBUS handler back on top of the guard
//!               before E is mapped (as a library installing its handler
//!               late would): mapping E must put the guard back on top
//!        bit 3: raise a SIGBUS outside guest memory (the decoy) after E is
//!               mapped and at the end: the guard must hand it on
//!        bit 4: map E read-only
//! 5      truncate E before command `b % (n + 2)`: n is after the last, n + 1
//!        never
//! 6..8   E's new size in bytes, u16 LE, modulo E_LEN + 1: fully, partly
//!        (a page boundary or inside a page) or not at all
//! 8..    n SQEs, then guest memory as for a plain input (E gets the first
//!        E_LEN bytes, as B and C get theirs)
//! ```
//!
//! Oracle, beyond the plain input's for each command ([`sqe::check`]):
//! - no death by SIGBUS (the process survives every fault in E, and the
//!   rig's handler below the guard never sees one: [`crate::sigbus`]);
//! - a PRP command whose list entries or (on a namespace that moves data)
//!   data lie in E past its file's end completes with Data Transfer Error,
//!   as the reference walk predicts; a command that made the device find E
//!   lost completes with Data Transfer Error, whatever it is; one that the
//!   model says touches no lost memory does not lose E;
//! - E, once lost, stays lost: every access fails, and the loss is counted
//!   once; a Write whose data was lost may change only its own LBA range;
//! - afterwards a Read into E's truncated part fails and leaves E lost, a
//!   Read into its first page then fails too (lost as a whole, no new
//!   fault); a region that was never truncated still works;
//! - the other regions (checked per command) and the namespaces (read back
//!   after each command) are as the plain oracle wants them, and the
//!   controller is not fatal (its queues are not in E).
//!
//! The commands run one at a time, so the command in flight at a loss is
//! the one that faulted: the guard's rule that fails any command in flight
//! at that moment (`rust/engine/memloss.rs`) is not needed to explain a
//! status here.

use nvmefast::mem::Kind;
use nvmefast::spec::opcode::io as op;
use nvmefast::spec::{Sqe, Status};

use crate::model::{self, E_IOVA, E_LEN, PAGE};
use crate::rig::{Images, Rig};
use crate::sigbus;
use crate::sqe::{self, namespace};

/// The first bytes of a loss input.
pub const MAGIC: &[u8] = b"LOSS";

/// What the model says a command does with region E's lost part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Touch {
    /// It never reaches it: E ends the command as it began.
    No,
    /// It touches it (a PRP list entry, or data any namespace but the null
    /// one moves; a file namespace's through the kernel, whose EFAULT the
    /// device must still find to be a loss): E lost.
    Faults,
    /// The model cannot tell (SGLs, range lists, region D).
    Unknown,
}

/// [`Touch`] for `sqe` against guest memory `g`, following the order in
/// which `sqe::check_status` (and the device) fail a command.
fn touch(g: &Images, sqe: &Sqe) -> Touch {
    if sqe.fuse() != 0 || !model::status_allowed(sqe, Status::SUCCESS) {
        return Touch::No;
    }
    if sqe.nsid() == model::ZONED.0 || sqe.nsid() == model::PI_NSID {
        // Whether the zone rules let a command's data move, and where the
        // PI namespace's metadata pointer reads or writes, this model does
        // not follow: any command of theirs that carries a buffer may touch E.
        let moves = [
            op::READ,
            op::WRITE,
            op::COMPARE,
            op::COPY,
            op::DATASET_MANAGEMENT,
            op::ZONE_APPEND,
            op::ZONE_MGMT_SEND,
            op::ZONE_MGMT_RECV,
        ];
        return if moves.contains(&sqe.opcode()) {
            Touch::Unknown
        } else {
            Touch::No
        };
    }
    let Some((lbs, size, backend)) = namespace(sqe.nsid()) else {
        return Touch::No;
    };
    let (slba, nlb) = model::lba_range(sqe);
    let in_range = slba
        .checked_add(nlb)
        .and_then(|e| e.checked_mul(lbs))
        .is_some_and(|end| end <= size);
    match sqe.opcode() {
        op::READ | op::WRITE | op::COMPARE => {}
        op::DATASET_MANAGEMENT | op::COPY => return Touch::Unknown,
        _ => return Touch::No,
    }
    let len = nlb * lbs;
    if !in_range || len > model::MDTS_BYTES {
        return Touch::No;
    }
    if sqe.psdt() != 0 {
        return Touch::Unknown;
    }
    match model::prp_pieces(g, sqe.prp1(), sqe.prp2(), len, sqe.opcode() == op::READ) {
        Err(model::RefError::Faults) => Touch::Faults,
        Err(model::RefError::Unknown) => Touch::Unknown,
        Err(_) => Touch::No,
        Ok(p) if backend == "null" || !model::faults(g, &p) => Touch::No,
        Ok(_) => Touch::Faults,
    }
}

/// The plan a loss input's header sets.
struct Plan {
    commands: usize,
    reinstall: bool,
    decoy: bool,
    writable: bool,
    cut: usize,
    size: usize,
}

impl Plan {
    fn parse(head: [u8; 4], available: usize) -> Plan {
        let commands = (usize::from(head[0] & 3) + 1).min(available);
        Plan {
            commands,
            reinstall: head[0] & 4 != 0,
            decoy: head[0] & 8 != 0,
            writable: head[0] & 16 == 0,
            cut: usize::from(head[1]) % (commands + 2),
            size: usize::from(u16::from_le_bytes([head[2], head[3]])) % (E_LEN + 1),
        }
    }
}

/// Runs a loss input (the bytes after [`MAGIC`]); panics when the device
/// breaks the oracle.
pub fn run(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    if rest.len() < 64 {
        return;
    }
    let plan = Plan::parse(*head, rest.len() / 64);
    let (sqes, guest) = rest.split_at(plan.commands * 64);
    let mut rig = sqe::rig();
    let lost_before = rig.regions_lost();
    rig.load(guest);
    if plan.reinstall {
        sigbus::install();
    }
    rig.map_e(guest, plan.writable);
    if sigbus::on_top() {
        panic!("a new guarded mapping did not put the SIGBUS guard back on top");
    }
    if plan.decoy {
        decoy(&rig, lost_before);
    }
    for (k, raw) in sqes.chunks_exact(64).enumerate() {
        if k == plan.cut {
            truncate(&mut rig, plan.size);
        }
        let sqe = Sqe::from_bytes(raw.try_into().expect("64 bytes"));
        command(&mut rig, &sqe, lost_before);
    }
    if plan.cut == plan.commands {
        truncate(&mut rig, plan.size);
    }
    afterwards(&mut rig, lost_before);
    rig.reset_zones();
    if plan.decoy {
        decoy(&rig, rig.regions_lost());
    }
    rig.unmap_e();
}

fn truncate(rig: &mut Rig, size: usize) {
    rig.e.as_mut().expect("region E").truncate(size);
}

/// A SIGBUS outside guest memory goes through the guard to the handler
/// below it, and costs guest memory nothing.
fn decoy(rig: &Rig, lost: u64) {
    let caught = sigbus::touch_decoy();
    assert_eq!(
        caught, 1,
        "a SIGBUS outside guest memory did not reach the handler below the guard"
    );
    assert_eq!(
        rig.regions_lost(),
        lost,
        "a SIGBUS outside guest memory was taken for a loss"
    );
}

/// One command of a loss input, checked.
fn command(rig: &mut Rig, sqe: &Sqe, lost_before: u64) {
    let was_lost = rig.kind_e() == Kind::Lost;
    let images = rig.images(was_lost);
    let expect = touch(&images, sqe);
    let cqe = rig.submit(sqe);
    let status = cqe.status();
    let fail = |why: String| -> ! {
        panic!("{why}\n  {sqe:?}\n  {cqe:?}\n  E lost before: {was_lost}, model: {expect:?}")
    };
    if let Err(why) = sqe::check(rig, &images, sqe, &cqe) {
        fail(why);
    }
    if let Err(why) = sqe::check_uncorrectable(rig, sqe, status) {
        fail(why);
    }
    let lost = rig.kind_e() == Kind::Lost;
    let dte = Status::DATA_TRANSFER_ERROR.dnr();
    if lost && !was_lost && status != dte {
        fail(format!(
            "E was lost under the command, which completed with {status:?}"
        ));
    }
    match expect {
        Touch::Faults if !lost => {
            fail("the command touched E past its end and E is not lost".into())
        }
        Touch::No if lost != was_lost => {
            fail("E was lost under a command that touched none of its lost part".into())
        }
        _ => {}
    }
    let count = rig.regions_lost() - lost_before;
    if count != u64::from(lost) {
        fail(format!("{count} regions counted lost, E lost: {lost}"));
    }
    // A Write whose data went with the memory failed, maybe half done.
    let cut_short = status == dte && sqe.opcode() == op::WRITE && lost != was_lost;
    let range = cut_short.then(|| write_range(sqe)).flatten();
    let before = rig.pattern_images();
    let after = sqe::check_namespaces(rig, &images, sqe, status, &before, range)
        .unwrap_or_else(|why| fail(why));
    if after != before {
        rig.restore_namespaces();
    }
}

/// The byte range of a Write's LBAs, if inside its namespace.
fn write_range(sqe: &Sqe) -> Option<(usize, usize)> {
    let (lbs, size, _) = namespace(sqe.nsid())?;
    let (slba, nlb) = model::lba_range(sqe);
    let lo = slba.checked_mul(lbs)?;
    let hi = slba.checked_add(nlb)?.checked_mul(lbs)?;
    (hi <= size).then_some((lo as usize, hi as usize))
}

/// After the commands: E's truncated part and then all of it fail, E
/// counted lost once; an untruncated E still works; the controller is not
/// fatal. The probes are Compares, which read E (as the device may even
/// when E is mapped read-only) and change nothing.
fn afterwards(rig: &mut Rig, lost_before: u64) {
    let truncated = rig.e.as_ref().is_some_and(|e| e.valid < E_LEN);
    let dte = Status::DATA_TRANSFER_ERROR.dnr();
    let compare = |rig: &mut Rig, at: u64| {
        let mut s = Sqe::new(op::COMPARE, 0xfff2, 1);
        s.set_lba_range(0, 1);
        s.set_prps(at, 0);
        rig.submit(&s).status()
    };
    if truncated {
        let status = compare(rig, E_IOVA + (E_LEN as u64 - PAGE));
        assert_eq!(status, dte, "a Compare from E's truncated part");
        assert_eq!(
            rig.kind_e(),
            Kind::Lost,
            "E after a Compare from its truncated part"
        );
        assert_eq!(
            compare(rig, E_IOVA),
            dte,
            "a Compare from E's first page, E lost"
        );
    } else {
        let status = compare(rig, E_IOVA);
        assert!(
            [Status::SUCCESS, Status::COMPARE_FAILURE.dnr()].contains(&status),
            "a Compare from E, never truncated: {status:?}"
        );
        assert_eq!(rig.kind_e(), Kind::Guarded, "E, never truncated");
    }
    assert_eq!(
        rig.regions_lost() - lost_before,
        u64::from(truncated),
        "regions counted lost (E truncated: {truncated})"
    );
    assert!(
        !rig.engine.fatal(),
        "the controller is fatal, its queues are not in E"
    );
}
