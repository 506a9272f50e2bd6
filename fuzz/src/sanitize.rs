//! Sanitize inputs of the `sqe` target: one SQE submitted while a sanitize
//! runs (Base 2.0, 8.1.26). The input:
//!
//! ```text
//! 0..4   "SANI"
//! 4      bit 0: overwrite (else block erase); bit 1: invert between
//!        passes; bit 2: no deallocation after an overwrite
//! 5      overwrite passes: 1 + b % 16
//! 6..10  the overwrite pattern, u32 LE
//! 10..   the SQE, then guest memory as for a plain input
//! ```
//!
//! Oracle:
//! - a command that completes while the sanitize still runs was refused
//!   as the spec says: Sanitize In Progress (0/1Dh) for every I/O command
//!   but Flush, on every namespace; Flush as without a sanitize (Success);
//!   an invalid NSID, a fused command or an unknown opcode as always; and
//!   it moved no byte of guest memory;
//! - the sanitize then ends Done with every pass made, and every namespace
//!   that stores data reads back erased: zeroes (block erase, or
//!   deallocated after an overwrite) or the last pass's pattern.
//!
//! The sanitize takes at least [`MIN`]; the namespaces are restored after.

use std::time::{Duration, Instant};

use nvmefast::engine::{SanitizeRequest, SanitizeState};
use nvmefast::nsmgmt::background::Erase;
use nvmefast::spec::opcode::io as op;
use nvmefast::spec::{Sqe, Status};

use crate::model;
use crate::sqe::{self, namespace};

/// The first bytes of a sanitize input.
pub const MAGIC: &[u8] = b"SANI";

/// The least time a sanitize takes here: the command is all but certain
/// to run inside it (one that did not is not judged).
const MIN: Duration = Duration::from_millis(20);

/// The I/O opcodes the controller serves (others are Invalid Opcode before
/// any namespace is looked at).
const SERVED: [u8; 12] = [
    op::FLUSH,
    op::WRITE,
    op::READ,
    op::WRITE_UNCORRECTABLE,
    op::COMPARE,
    op::WRITE_ZEROES,
    op::DATASET_MANAGEMENT,
    op::VERIFY,
    op::COPY,
    op::ZONE_MGMT_SEND,
    op::ZONE_MGMT_RECV,
    op::ZONE_APPEND,
];

/// The status a command completes with while a sanitize runs.
fn expected(sqe: &Sqe) -> Status {
    let nsid = sqe.nsid();
    let valid = namespace(nsid).is_some() || nsid == model::ZONED.0;
    if sqe.fuse() != 0 {
        Status::INVALID_FIELD.dnr()
    } else if !SERVED.contains(&sqe.opcode()) {
        Status::INVALID_OPCODE.dnr()
    } else if !valid {
        Status::INVALID_NAMESPACE.dnr()
    } else if sqe.opcode() == op::FLUSH {
        Status::SUCCESS
    } else {
        Status::SANITIZE_IN_PROGRESS
    }
}

/// Runs one sanitize input (after [`MAGIC`]); panics on a breach.
pub fn run(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let Some((raw, guest)) = rest.split_first_chunk::<64>() else {
        return;
    };
    let flags = head[0];
    let erase = if flags & 1 != 0 {
        Erase::Overwrite {
            pattern: u32::from_le_bytes([head[2], head[3], head[4], head[5]]),
            passes: 1 + head[1] % 16,
            invert: flags & 2 != 0,
        }
    } else {
        Erase::Block
    };
    let deallocate = flags & 4 == 0;
    let sqe = Sqe::from_bytes(raw);
    let mut rig = sqe::rig();
    let images = rig.load(guest);
    rig.engine
        .sanitize_start(SanitizeRequest {
            erase,
            deallocate,
            min: MIN,
        })
        .expect("sanitize start");
    let cqe = rig.submit(&sqe);
    let inside = rig.engine.sanitize_status().state == SanitizeState::Running;
    let fail = |why: String| -> ! { panic!("{why}\n  {sqe:?}\n  {cqe:?}\n  {erase:?}") };
    if let Err(why) = sqe::check_completion(&rig, &sqe, &cqe) {
        fail(why);
    }
    if inside {
        let want = expected(&sqe);
        if cqe.status() != want {
            fail(format!(
                "completed {:?} during a sanitize, expected {want:?}",
                cqe.status()
            ));
        }
        // Nothing ran: guest memory as it was (a Read's failure included).
        let mut quiet = sqe;
        quiet.dw[0] = (quiet.dw[0] & !0xff) | u32::from(op::FLUSH);
        if let Err(why) = sqe::check_guest_memory(&rig, &images, &quiet, cqe.status()) {
            fail(why);
        }
    }
    let t = Instant::now();
    while rig.engine.sanitize_status().state == SanitizeState::Running {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sanitize never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = rig.engine.sanitize_status();
    if st.state != SanitizeState::Done || st.passes_done != erase.passes() {
        fail(format!("the sanitize ended {st:?}"));
    }
    let zeroes = deallocate || erase == Erase::Block;
    let last = erase.pattern(erase.passes() - 1).unwrap_or(0).to_le_bytes();
    for i in 0..rig.patterns.len() {
        let (nsid, lbs, ref image) = rig.patterns[i];
        let len = image.len();
        let after = rig.read_namespace(nsid, lbs, len);
        let bad = (0..len).find(|&b| after[b] != if zeroes { 0 } else { last[b % 4] });
        if let Some(b) = bad {
            fail(format!(
                "namespace {nsid} byte {b:#x} is {:#04x} after the sanitize",
                after[b]
            ));
        }
    }
    rig.restore_namespaces();
    rig.reset_zones();
}
