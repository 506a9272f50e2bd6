//! Device Self-test and Sanitize through the engine and the driver mock,
//! against Base 2.0 8.1.8 and 8.1.26: a self-test reads the storage and
//! fails at the first uncorrectable block; a sanitize leaves every block
//! erased (zeroes or the pattern), holds every I/O command but Flush off
//! with Sanitize In Progress (0/1Dh) while it runs, including namespaces
//! added meanwhile, and survives a controller reset.

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::ns_tests::{engine, get, put, ram, run, rw};
use super::*;
use crate::driver::MockHost;
use crate::nsmgmt::background::{Erase, Outcome, SEGMENT_INTEGRITY};
use crate::spec::opcode::io as op;
use crate::spec::Status;

const MIB: u64 = 1 << 20;

/// Polls `done` every millisecond for up to 30 s.
fn wait_for(mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < Duration::from_secs(30), "never happened");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn test_done(e: &Engine) -> SelfTestStatus {
    wait_for(|| !e.self_test_status().running);
    e.self_test_status()
}

#[test]
fn a_self_test_passes_then_fails_at_the_first_uncorrectable_block() {
    let e = engine(vec![ram(4 * MIB), ram(MIB)], 2, 0);
    let ended = Arc::new(AtomicUsize::new(0));
    let seen = ended.clone();
    e.set_background_handler(Some(Arc::new(move |what| {
        assert_eq!(what, "self-test");
        seen.fetch_add(1, Ordering::SeqCst);
    })));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    assert_eq!(e.self_test_status().outcome, Outcome::None, "never ran");
    e.self_test_start(&[1, 2], true, Duration::ZERO).unwrap();
    let s = test_done(&e);
    assert_eq!(
        (s.outcome, s.percent, s.extended),
        (Outcome::Passed, 100, true)
    );
    // Marks in both namespaces: the first namespace in order fails, at its
    // lowest marked LBA.
    for (nsid, slba) in [(2, 7), (1, 5000), (1, 300)] {
        let mut s = Sqe::new(op::WRITE_UNCORRECTABLE, 1, nsid);
        s.set_lba_range(slba, 2);
        assert_eq!(run(&e, &mut q, s).status(), Status::SUCCESS);
    }
    for extended in [false, true] {
        e.self_test_start(&[1, 2], extended, Duration::ZERO)
            .unwrap();
        let s = test_done(&e);
        assert_eq!(
            (s.outcome, s.nsid, s.segment),
            (
                Outcome::Failed {
                    nsid: 1,
                    lba: 300,
                    segment: SEGMENT_INTEGRITY
                },
                1,
                SEGMENT_INTEGRITY
            )
        );
    }
    e.self_test_start(&[2], false, Duration::ZERO).unwrap();
    assert!(matches!(
        test_done(&e).outcome,
        Outcome::Failed {
            nsid: 2,
            lba: 7,
            ..
        }
    ));
    // The controller alone (NSID 0): nothing to read, passes.
    e.self_test_start(&[], false, Duration::ZERO).unwrap();
    assert_eq!(test_done(&e).outcome, Outcome::Passed);
    wait_for(|| ended.load(Ordering::SeqCst) == 5);
    assert!(matches!(
        e.self_test_start(&[3], false, Duration::ZERO),
        Err(EngineError::Namespace(_))
    ));
}

#[test]
fn a_self_test_shows_progress_for_its_minimum_time_and_aborts() {
    let e = engine(vec![ram(MIB)], 1, 0);
    e.self_test_start(&[1], false, Duration::from_secs(3600))
        .unwrap();
    // The work is done at once; the percentage follows the hour asked for.
    std::thread::sleep(Duration::from_millis(20));
    let s = e.self_test_status();
    assert!(s.running && s.percent < 100, "{s:?}");
    assert!(
        matches!(
            e.self_test_start(&[1], true, Duration::ZERO),
            Err(EngineError::Busy(m)) if m.contains("abort it first")
        ),
        "one at a time (Device Self-test In Progress)"
    );
    assert!(e.self_test_abort());
    let s = e.self_test_status();
    assert_eq!((s.running, s.outcome), (false, Outcome::Aborted));
    assert!(!e.self_test_abort(), "none runs");
    // With seconds asked for, a poller sees it between 0 and 100 (nvme-cli
    // --wait needs that); then it is aborted.
    e.self_test_start(&[1], false, Duration::from_secs(20))
        .unwrap();
    wait_for(|| e.self_test_status().percent > 0);
    let s = e.self_test_status();
    assert!(s.running && s.percent < 100, "{s:?}");
    assert!(e.self_test_abort());
    assert_eq!(e.self_test_status().outcome, Outcome::Aborted);
}

fn sanitize_done(e: &Engine) -> SanitizeStatus {
    wait_for(|| e.sanitize_status().state != SanitizeState::Running);
    e.sanitize_status()
}

#[test]
fn sanitize_erases_every_namespace_and_holds_io_off_meanwhile() {
    let e = engine(vec![ram(2 * MIB), ram(MIB)], 4, 4 * MIB);
    let ended = Arc::new(AtomicUsize::new(0));
    let seen = ended.clone();
    e.set_background_handler(Some(Arc::new(move |what| {
        assert_eq!(what, "sanitize");
        seen.fetch_add(1, Ordering::SeqCst);
    })));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    for (nsid, lba) in [(1, 0), (1, 4095), (2, 2047)] {
        assert_eq!(put(&e, &h, &mut q, nsid, lba, 0xA5, buf), Status::SUCCESS);
    }
    let mut s = Sqe::new(op::WRITE_UNCORRECTABLE, 1, 2);
    s.set_lba_range(9, 1);
    assert_eq!(run(&e, &mut q, s).status(), Status::SUCCESS);
    assert_eq!(e.sanitize_status().state, SanitizeState::Idle);
    e.sanitize_start(SanitizeRequest {
        erase: Erase::Overwrite {
            pattern: 0x0102_0304,
            passes: 3,
            invert: true,
        },
        deallocate: false,
        min: Duration::from_millis(400),
    })
    .unwrap();
    // From the moment it returns: every I/O command but Flush is refused,
    // with Sanitize In Progress, on every namespace and one added now.
    assert_eq!(e.sanitize_status().state, SanitizeState::Running);
    let n = e.add_namespace(&ram(MIB), None, true).unwrap();
    for nsid in [1, 2, n] {
        assert_eq!(
            get(&e, &h, &mut q, nsid, 0, buf).0,
            Status::SANITIZE_IN_PROGRESS
        );
        let mut wz = Sqe::new(op::WRITE_ZEROES, 2, nsid);
        wz.set_lba_range(0, 1);
        assert_eq!(run(&e, &mut q, wz).status(), Status::SANITIZE_IN_PROGRESS);
        let mut flush = Sqe::new(op::FLUSH, 3, nsid);
        flush.set_prps(0, 0);
        assert_eq!(run(&e, &mut q, flush).status(), Status::SUCCESS);
    }
    // Inactive NSIDs stay Invalid Field; a second sanitize is refused.
    assert_eq!(
        get(&e, &h, &mut q, 4, 0, buf).0,
        Status::INVALID_FIELD.dnr()
    );
    assert!(matches!(
        e.sanitize_start(SanitizeRequest {
            erase: Erase::Block,
            deallocate: true,
            min: Duration::ZERO
        }),
        Err(EngineError::Busy(_))
    ));
    assert!(matches!(
        e.self_test_start(&[1], false, Duration::ZERO),
        Err(EngineError::Busy(_))
    ));
    // A controller reset does not stop it.
    e.reset();
    assert_eq!(e.sanitize_status().state, SanitizeState::Running);
    let s = sanitize_done(&e);
    assert_eq!(
        s,
        SanitizeStatus {
            state: SanitizeState::Done,
            progress: u16::MAX,
            passes_done: 3
        }
    );
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    // Three passes, inverted between: the last one wrote the pattern
    // itself, little endian, on every block of every namespace.
    for (nsid, lba) in [(1, 0), (1, 4095), (2, 2047), (2, 9)] {
        h.mem.write(buf, &[0xEE; 512]);
        assert_eq!(
            run(&e, &mut q, rw(op::READ, nsid, lba, 1, buf)).status(),
            Status::SUCCESS,
            "NSID {nsid} LBA {lba}: served again, and no longer uncorrectable"
        );
        let mut b = [0u8; 512];
        h.mem.read(buf, &mut b);
        assert!(
            b.chunks(4).all(|w| w == [4, 3, 2, 1]),
            "NSID {nsid} LBA {lba}"
        );
    }
    assert_eq!(e.uncorrectable_ranges(2), Some(vec![]));
    wait_for(|| ended.load(Ordering::SeqCst) == 1);
}

#[test]
fn block_erase_deallocates_and_progress_rises() {
    let e = engine(vec![ram(4 * MIB)], 1, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    assert_eq!(put(&e, &h, &mut q, 1, 100, 0x5A, buf), Status::SUCCESS);
    e.self_test_start(&[1], true, Duration::from_secs(3600))
        .unwrap();
    e.sanitize_start(SanitizeRequest {
        erase: Erase::Block,
        deallocate: true,
        min: Duration::from_secs(2),
    })
    .unwrap();
    assert_eq!(
        e.self_test_status().outcome,
        Outcome::Aborted,
        "a sanitize aborts a self-test"
    );
    let mut last = 0;
    let mut rising = false;
    while e.sanitize_status().state == SanitizeState::Running {
        let p = e.sanitize_status().progress;
        assert!(p >= last, "progress went back");
        rising |= p > last && p < u16::MAX;
        last = p;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(rising, "progress never showed between 0 and 65535");
    assert_eq!(e.sanitize_status().state, SanitizeState::Done);
    assert_eq!(get(&e, &h, &mut q, 1, 100, buf), (Status::SUCCESS, 0));
}
