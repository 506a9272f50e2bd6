//! Write Uncorrectable (I/O 04h, NVM Command Set 1.0 3.3.7) through the
//! driver mock: marked blocks read back as Unrecovered Read Error (SCT 2h /
//! SC 81h) on Read, Compare, Verify and a Copy source until a Write, Write
//! Zeroes, deallocation, Copy destination, Format NVM or (zoned) a Zone
//! Reset; a file namespace keeps the marks across a reopen. Expectations
//! are the spec's statuses and the blocks the host marked.

use super::file_tests::TempPath;
use super::ns_tests::{engine, file, get, put, ram, run, rw};
use super::*;
use crate::aio::Choice;
use crate::driver::{HostQueue, MockHost};
use crate::spec::opcode::io as op;
use crate::spec::Status;

const MIB: u64 = 1 << 20;
const URE: Status = Status::UNRECOVERED_READ_ERROR;

fn uncor(nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut s = Sqe::new(op::WRITE_UNCORRECTABLE, 9, nsid);
    s.set_lba_range(slba, nlb);
    s
}

fn no_data(opcode: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    let mut s = Sqe::new(opcode, 10, nsid);
    s.set_lba_range(slba, nlb);
    s
}

/// The status of a one-range Copy of `nlb` blocks at `src` to `dst`.
/// The range list goes to `list`.
fn copy(
    e: &Engine,
    h: &MockHost,
    q: &mut HostQueue,
    list: u64,
    src: u64,
    nlb: u16,
    dst: u64,
) -> Status {
    let mut entry = [0u8; 32];
    entry[8..16].copy_from_slice(&src.to_le_bytes());
    entry[16..18].copy_from_slice(&(nlb - 1).to_le_bytes());
    h.mem.write(list, &entry);
    let mut s = Sqe::new(op::COPY, 11, 1);
    s.set_prps(list, 0);
    s.dw[10] = dst as u32;
    s.dw[11] = (dst >> 32) as u32;
    run(e, q, s).status()
}

/// The status of a Dataset Management deallocation of one range.
fn deallocate(
    e: &Engine,
    h: &MockHost,
    q: &mut HostQueue,
    list: u64,
    slba: u64,
    nlb: u32,
) -> Status {
    let mut r = [0u8; 16];
    r[4..8].copy_from_slice(&nlb.to_le_bytes());
    r[8..16].copy_from_slice(&slba.to_le_bytes());
    h.mem.write(list, &r);
    let mut s = Sqe::new(op::DATASET_MANAGEMENT, 12, 1);
    s.set_prps(list, 0);
    s.dw[11] = 1 << 2;
    run(e, q, s).status()
}

#[test]
fn marked_blocks_fail_every_read_until_written() {
    let e = engine(vec![ram(MIB)], 1, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(8192);
    for lba in 8..16 {
        assert_eq!(put(&e, &h, &mut q, 1, lba, 0x5A, buf), Status::SUCCESS);
    }
    assert_eq!(run(&e, &mut q, uncor(1, 10, 4)).status(), Status::SUCCESS);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(10, 4)]));
    e.take_errors();
    // Every read-type command over a marked block: 2/81h, at the first
    // marked LBA; around them the data is as written.
    assert_eq!(get(&e, &h, &mut q, 1, 9, buf), (Status::SUCCESS, 0x5A));
    assert_eq!(get(&e, &h, &mut q, 1, 14, buf), (Status::SUCCESS, 0x5A));
    assert_eq!(get(&e, &h, &mut q, 1, 13, buf).0, URE.dnr());
    assert_eq!(
        run(&e, &mut q, rw(op::READ, 1, 8, 4, buf)).status(),
        URE.dnr()
    );
    let errors = e.take_errors();
    assert_eq!(errors.len(), 2);
    assert_eq!(
        (errors[0].failure.lba, errors[1].failure.lba),
        (13, 10),
        "the Error Information entry names the first marked LBA"
    );
    h.mem.write(buf, &[0x5A; 512]);
    assert_eq!(
        run(&e, &mut q, rw(op::COMPARE, 1, 12, 1, buf)).status(),
        URE.dnr()
    );
    assert_eq!(
        run(&e, &mut q, no_data(op::VERIFY, 1, 6, 8)).status(),
        URE.dnr()
    );
    assert_eq!(
        run(&e, &mut q, no_data(op::VERIFY, 1, 6, 4)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        copy(&e, &h, &mut q, buf + 4096, 11, 1, 100),
        URE.dnr(),
        "a Copy source"
    );
    // Each kind of write clears the blocks it writes, and only those.
    assert_eq!(put(&e, &h, &mut q, 1, 10, 0x77, buf), Status::SUCCESS);
    assert_eq!(get(&e, &h, &mut q, 1, 10, buf), (Status::SUCCESS, 0x77));
    assert_eq!(
        run(&e, &mut q, no_data(op::WRITE_ZEROES, 1, 11, 1)).status(),
        Status::SUCCESS
    );
    assert_eq!(get(&e, &h, &mut q, 1, 11, buf), (Status::SUCCESS, 0));
    assert_eq!(
        deallocate(&e, &h, &mut q, buf + 4096, 12, 1),
        Status::SUCCESS
    );
    assert_eq!(get(&e, &h, &mut q, 1, 12, buf).0, Status::SUCCESS);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(13, 1)]));
    assert_eq!(copy(&e, &h, &mut q, buf + 4096, 9, 1, 13), Status::SUCCESS);
    assert_eq!(get(&e, &h, &mut q, 1, 13, buf), (Status::SUCCESS, 0x5A));
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![]));
    // The command's own checks: the range, the opcode's NSID rules.
    assert_eq!(
        run(&e, &mut q, uncor(1, MIB / 512 - 1, 2)).status(),
        Status::LBA_OUT_OF_RANGE.dnr()
    );
    assert_eq!(
        run(&e, &mut q, uncor(2, 0, 1)).status(),
        Status::INVALID_NAMESPACE.dnr()
    );
    // Format NVM: every mark goes.
    assert_eq!(run(&e, &mut q, uncor(1, 0, 2048)).status(), Status::SUCCESS);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(0, 2048)]));
    e.format_namespace(1, 512).unwrap();
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![]));
    assert_eq!(get(&e, &h, &mut q, 1, 100, buf), (Status::SUCCESS, 0));
}

#[test]
fn a_namespace_with_metadata_marks_and_clears_the_same() {
    let md = NamespaceSpec {
        metadata: crate::pi::Format {
            ms: 8,
            ..crate::pi::Format::NONE
        },
        ..ram(MIB)
    };
    let e = engine(vec![md], 1, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(8192);
    assert_eq!(run(&e, &mut q, uncor(1, 3, 1)).status(), Status::SUCCESS);
    // Extended LBAs are off: the metadata pointer is needed for a read
    // that gets that far; the mark fails it first.
    assert_eq!(get(&e, &h, &mut q, 1, 3, buf).0, URE.dnr());
    assert_eq!(
        run(&e, &mut q, no_data(op::WRITE_ZEROES, 1, 3, 1)).status(),
        Status::SUCCESS
    );
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![]));
}

#[test]
fn a_shrink_forgets_the_marks_past_the_new_end() {
    let e = engine(vec![ram(MIB)], 1, 2 * MIB);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    assert_eq!(
        run(&e, &mut q, uncor(1, 1000, 100)).status(),
        Status::SUCCESS
    );
    e.resize_namespace(1, 512 * 1024).unwrap();
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(1000, 24)]));
    e.resize_namespace(1, MIB).unwrap();
    let buf = h.alloc(4096);
    assert_eq!(get(&e, &h, &mut q, 1, 1050, buf), (Status::SUCCESS, 0));
}

/// A file namespace on `io`: marks made, then made durable by a Flush (or
/// at once with the write cache off), are there after a reopen.
fn file_marks_persist(io: Choice, write_cache: bool) {
    let p = TempPath::new("/dev/shm", "uncor");
    let companion = format!("{}.uncor", p.0);
    let _cleanup = TempPath(companion.clone());
    {
        let e = engine(vec![file(&p.0, MIB, io)], 1, 0);
        e.set_write_cache(write_cache);
        e.start().unwrap();
        let mut h = MockHost::new(&e, 1 << 20).unwrap();
        let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
        let buf = h.alloc(4096);
        assert_eq!(put(&e, &h, &mut q, 1, 5, 0x42, buf), Status::SUCCESS);
        assert_eq!(run(&e, &mut q, uncor(1, 4, 3)).status(), Status::SUCCESS);
        assert_eq!(run(&e, &mut q, uncor(1, 200, 1)).status(), Status::SUCCESS);
        // The asynchronous file path checks the marks as the synchronous
        // one does.
        assert_eq!(get(&e, &h, &mut q, 1, 5, buf).0, URE.dnr());
        assert_eq!(put(&e, &h, &mut q, 1, 200, 0x43, buf), Status::SUCCESS);
        assert_eq!(get(&e, &h, &mut q, 1, 200, buf), (Status::SUCCESS, 0x43));
        if write_cache {
            let mut f = Sqe::new(op::FLUSH, 3, 1);
            f.set_prps(0, 0);
            assert_eq!(run(&e, &mut q, f).status(), Status::SUCCESS);
        }
        assert!(std::path::Path::new(&companion).exists(), "durable");
        e.stop();
        e.release_files();
    }
    let e = engine(vec![file(&p.0, MIB, io)], 1, 0);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(4, 3)]));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    assert_eq!(get(&e, &h, &mut q, 1, 6, buf).0, URE.dnr());
    assert_eq!(
        run(&e, &mut q, no_data(op::WRITE_ZEROES, 1, 4, 3)).status(),
        Status::SUCCESS
    );
    let mut f = Sqe::new(op::FLUSH, 3, 1);
    f.set_prps(0, 0);
    assert_eq!(run(&e, &mut q, f).status(), Status::SUCCESS);
    assert!(
        !std::path::Path::new(&companion).exists(),
        "nothing marked: no companion left"
    );
    e.stop();
    e.release_files();
}

#[test]
fn a_file_namespace_keeps_its_marks_in_a_companion() {
    file_marks_persist(Choice::Threads, true);
    file_marks_persist(Choice::Threads, false);
    // Served on the worker: its Flush is the synchronous one.
    file_marks_persist(Choice::Inline, true);
    if crate::aio::choose(Choice::IoUring, true).is_ok() {
        file_marks_persist(Choice::IoUring, true);
    }
}

#[test]
fn a_zoned_namespace_takes_it_as_a_write_at_the_write_pointer() {
    use crate::zns::mgmt::zsa;
    let zoned = NamespaceSpec {
        zones: Some(crate::zns::ZoneSpec {
            size_bytes: 128 * 512,
            ..crate::zns::ZoneSpec::default()
        }),
        ..ram(MIB)
    };
    let e = engine(vec![zoned], 1, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    // Zone 1 (LBAs 128..256) is Empty: its write pointer is 128.
    assert_eq!(
        run(&e, &mut q, uncor(1, 130, 2)).status(),
        Status::ZONE_INVALID_WRITE.dnr(),
        "not at the write pointer"
    );
    assert_eq!(run(&e, &mut q, uncor(1, 128, 2)).status(), Status::SUCCESS);
    assert_eq!(put(&e, &h, &mut q, 1, 130, 0x21, buf), Status::SUCCESS);
    assert_eq!(get(&e, &h, &mut q, 1, 129, buf).0, URE.dnr());
    assert_eq!(get(&e, &h, &mut q, 1, 130, buf), (Status::SUCCESS, 0x21));
    // The marks sit below the write pointer, where Zone Append never
    // writes: it goes on at 132.
    assert_eq!(run(&e, &mut q, uncor(1, 131, 1)).status(), Status::SUCCESS);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![(128, 2), (131, 1)]));
    let c = run(&e, &mut q, rw(op::ZONE_APPEND, 1, 128, 1, buf));
    assert_eq!((c.status(), c.dw0), (Status::SUCCESS, 132));
    // A Zone Reset empties the zone: nothing in it is marked.
    let mut reset = Sqe::new(op::ZONE_MGMT_SEND, 4, 1);
    reset.dw[10] = 128;
    reset.dw[13] = zsa::RESET;
    assert_eq!(run(&e, &mut q, reset).status(), Status::SUCCESS);
    assert_eq!(e.uncorrectable_ranges(1), Some(vec![]));
    assert_eq!(get(&e, &h, &mut q, 1, 129, buf), (Status::SUCCESS, 0));
}
