//! The namespace table through the driver mock: NSID validity (Base 2.0
//! 3.2.1.2, 3.2.1.5), namespaces added, removed, resized, detached and
//! attached while the controller serves, and the capacity they draw on.
//! Expectations are the spec's statuses and the data the host wrote.

use super::file_tests::TempPath;
use super::*;
use crate::aio::Choice;
use crate::backend::{CacheMode, FileSpec};
use crate::driver::{HostQueue, MockHost};
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::time::Duration;

const MIB: u64 = 1 << 20;

pub(super) fn ram(size: u64) -> NamespaceSpec {
    NamespaceSpec {
        size_bytes: size,
        lba_size: 512,
        backend: "ram".into(),
        ..NamespaceSpec::default()
    }
}

pub(super) fn file(path: &str, size: u64, io: Choice) -> NamespaceSpec {
    NamespaceSpec {
        size_bytes: size,
        lba_size: 512,
        backend: "file".into(),
        file: Some(FileSpec {
            path: path.into(),
            readonly: false,
            cache: CacheMode::Buffered,
            io,
        }),
        ..NamespaceSpec::default()
    }
}

/// An engine with `namespaces`, NN `nn` and `capacity` bytes, two I/O
/// queue pairs on two iothreads.
pub(super) fn engine(namespaces: Vec<NamespaceSpec>, nn: u32, capacity: u64) -> Engine {
    Engine::new(EngineConfig {
        namespaces,
        msix_vectors: 3,
        max_qid: 2,
        max_queue_entries: 256,
        mdts_bytes: 0,
        poll_us: 50,
        msix_embedder_managed: true,
        polling: Polling::Adaptive,
        iothreads: 2,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn,
        capacity_bytes: capacity,
    })
    .unwrap()
}

pub(super) fn run(e: &Engine, q: &mut HostQueue, s: Sqe) -> Cqe {
    q.push(&s);
    q.ring_sq(e);
    let c = q.wait(Duration::from_secs(10)).expect("no completion");
    q.ring_cq(e);
    c
}

pub(super) fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u32, buf: u64) -> Sqe {
    let mut s = Sqe::new(opcode, 7, nsid);
    s.set_prps(buf, 0);
    s.set_lba_range(slba, nlb);
    s
}

/// Writes one 512-byte block of `byte` at `lba` of `nsid`.
pub(super) fn put(
    e: &Engine,
    h: &MockHost,
    q: &mut HostQueue,
    nsid: u32,
    lba: u64,
    byte: u8,
    buf: u64,
) -> Status {
    h.mem.write(buf, &[byte; 512]);
    run(e, q, rw(op::WRITE, nsid, lba, 1, buf)).status()
}

/// Reads one block of `nsid` at `lba`: its status and first byte.
pub(super) fn get(
    e: &Engine,
    h: &MockHost,
    q: &mut HostQueue,
    nsid: u32,
    lba: u64,
    buf: u64,
) -> (Status, u8) {
    h.mem.write(buf, &[0xEE; 512]);
    let st = run(e, q, rw(op::READ, nsid, lba, 1, buf)).status();
    let mut b = [0u8; 512];
    h.mem.read(buf, &mut b);
    (st, b[0])
}

#[test]
fn nsids_past_nn_are_invalid_and_unallocated_ones_inactive() {
    let e = engine(vec![ram(MIB)], 4, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    // 3.2.1.5: an invalid NSID (0, above NN, FFFFFFFFh without broadcast)
    // is Invalid Namespace or Format; a valid unallocated one is inactive:
    // Invalid Field in Command.
    for (nsid, want) in [
        (0, Status::INVALID_NAMESPACE),
        (5, Status::INVALID_NAMESPACE),
        (0xFFFF_FFFF, Status::INVALID_NAMESPACE),
        (2, Status::INVALID_FIELD),
        (4, Status::INVALID_FIELD),
    ] {
        let c = run(&e, &mut q, rw(op::READ, nsid, 0, 1, buf));
        assert_eq!(c.status(), want.dnr(), "read of NSID {nsid:#x}");
        let mut flush = Sqe::new(op::FLUSH, 8, nsid);
        flush.set_prps(0, 0);
        assert_eq!(
            run(&e, &mut q, flush).status(),
            want.dnr(),
            "flush of {nsid:#x}"
        );
    }
    assert_eq!(e.nn(), 4);
    assert_eq!(e.allocated_nsids(), vec![1]);
}

#[test]
fn nn_and_capacity_are_checked_when_the_engine_is_built() {
    let cfg = |nn, cap| {
        Engine::new(EngineConfig {
            namespaces: vec![ram(MIB), ram(MIB)],
            msix_vectors: 2,
            max_qid: 1,
            max_queue_entries: 64,
            mdts_bytes: 0,
            poll_us: 50,
            msix_embedder_managed: true,
            polling: Polling::Interrupt,
            iothreads: 1,
            affinity: Vec::new(),
            doorbell_stride: 4,
            nn,
            capacity_bytes: cap,
        })
    };
    let e = cfg(1, 0).err().unwrap().to_string();
    assert!(e.contains("nn 1 must be in 2..=1024"), "{e}");
    assert!(cfg(ns_table::MAX_NN + 1, 0).is_err());
    let e = cfg(0, MIB).err().unwrap().to_string();
    assert!(e.contains("raise capacity_bytes"), "{e}");
    let c = cfg(0, 0).unwrap().capacity();
    assert_eq!(
        (c.total_bytes, c.unallocated_bytes()),
        (2 * MIB, 0),
        "0: what they take"
    );
}

#[test]
fn an_added_namespace_serves_at_once_and_a_removed_one_is_inactive() {
    let e = engine(vec![ram(MIB)], 8, 8 * MIB);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    assert_eq!(e.capacity().unallocated_bytes(), 7 * MIB);
    let nsid = e.add_namespace(&ram(2 * MIB), None, true).unwrap();
    assert_eq!(nsid, 2, "the lowest free NSID");
    assert_eq!(e.capacity().unallocated_bytes(), 5 * MIB);
    assert_eq!(e.namespace_capacity(2), Some(2 * MIB));
    assert_eq!(put(&e, &h, &mut q, 2, 4095, 0x5A, buf), Status::SUCCESS);
    assert_eq!(get(&e, &h, &mut q, 2, 4095, buf), (Status::SUCCESS, 0x5A));
    // The LBA range is the new namespace's, not the first one's.
    assert_eq!(
        run(&e, &mut q, rw(op::READ, 2, 4096, 1, buf)).status(),
        Status::LBA_OUT_OF_RANGE.dnr()
    );
    assert_eq!(e.add_namespace(&ram(MIB), Some(7), true).unwrap(), 7);
    assert_eq!(e.allocated_nsids(), vec![1, 2, 7]);
    e.remove_namespace(2).unwrap();
    assert_eq!(
        get(&e, &h, &mut q, 2, 0, buf).0,
        Status::INVALID_FIELD.dnr(),
        "removed: a valid, inactive NSID"
    );
    assert_eq!(
        e.capacity().unallocated_bytes(),
        6 * MIB,
        "its capacity is back"
    );
    // Allocated again at the same NSID: a new namespace, zeroes.
    assert_eq!(e.add_namespace(&ram(2 * MIB), None, true).unwrap(), 2);
    assert_eq!(get(&e, &h, &mut q, 2, 4095, buf), (Status::SUCCESS, 0));
    assert_eq!(
        get(&e, &h, &mut q, 1, 0, buf),
        (Status::SUCCESS, 0),
        "NSID 1 untouched"
    );
}

#[test]
fn capacity_and_nsids_refuse_what_cannot_be_allocated() {
    let e = engine(vec![ram(MIB)], 3, 3 * MIB);
    let err = e.add_namespace(&ram(3 * MIB), None, true).unwrap_err();
    assert!(
        matches!(err, EngineError::Capacity { needed, available, total } if needed == 3 * MIB && available == 2 * MIB && total == 3 * MIB),
        "{err:?}"
    );
    for (nsid, hint) in [
        (1, "allocated already"),
        (4, "out of range"),
        (0, "out of range"),
    ] {
        let err = e.add_namespace(&ram(MIB), Some(nsid), true).unwrap_err();
        assert!(
            matches!(&err, EngineError::Namespace(m) if m.contains(hint)),
            "{err}"
        );
    }
    e.add_namespace(&ram(MIB), None, true).unwrap();
    e.add_namespace(&ram(MIB), None, true).unwrap();
    assert_eq!(e.capacity().unallocated_bytes(), 0);
    e.remove_namespace(2).unwrap();
    let err = e.remove_namespace(2).unwrap_err();
    assert!(
        matches!(&err, EngineError::Namespace(m) if m.contains("not allocated")),
        "{err}"
    );
    e.add_namespace(&ram(MIB), None, true).unwrap();
    let err = e.add_namespace(&ram(512), None, true).unwrap_err();
    assert!(
        matches!(&err, EngineError::Namespace(m) if m.contains("every NSID 1..=3")),
        "{err}"
    );
    // Metadata takes capacity too: 2048 blocks of 512 + 8 bytes.
    e.remove_namespace(3).unwrap();
    let md = NamespaceSpec {
        metadata: crate::pi::Format {
            ms: 8,
            ..crate::pi::Format::NONE
        },
        ..ram(MIB)
    };
    assert!(
        matches!(e.add_namespace(&md, None, true), Err(EngineError::Capacity { needed, .. }) if needed == 2048 * 520)
    );
    // A spec that cannot serve is a ConfigError, and takes nothing.
    let bad = NamespaceSpec {
        lba_size: 1000,
        ..ram(MIB / 2)
    };
    assert!(matches!(
        e.add_namespace(&bad, None, true),
        Err(EngineError::Config(_))
    ));
    assert_eq!(e.capacity().unallocated_bytes(), MIB);
}

#[test]
fn detached_namespaces_are_inactive_and_keep_their_data() {
    let e = engine(vec![ram(MIB)], 2, 2 * MIB);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    let n = e.add_namespace(&ram(MIB), None, false).unwrap();
    assert_eq!(e.namespace_attached(n), Some(false));
    assert_eq!(
        get(&e, &h, &mut q, n, 0, buf).0,
        Status::INVALID_FIELD.dnr()
    );
    assert!(e.set_namespace_attached(n, true).unwrap());
    assert!(
        !e.set_namespace_attached(n, true).unwrap(),
        "already attached"
    );
    assert_eq!(put(&e, &h, &mut q, n, 9, 0x33, buf), Status::SUCCESS);
    assert!(e.set_namespace_attached(n, false).unwrap());
    assert_eq!(
        put(&e, &h, &mut q, n, 9, 0x44, buf),
        Status::INVALID_FIELD.dnr()
    );
    assert!(e.set_namespace_attached(n, true).unwrap());
    assert_eq!(get(&e, &h, &mut q, n, 9, buf), (Status::SUCCESS, 0x33));
    assert_eq!(e.namespace_attached(3), None);
    // Detached still takes its capacity: it is allocated.
    assert_eq!(e.capacity().unallocated_bytes(), 0);
}

/// The blocks of a resize test: one at the start, one at the old end.
fn resize_keeps_data_and_zeroes_what_it_adds(e: &Engine, nsid: u32) {
    e.start().unwrap();
    let mut h = MockHost::new(e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    let last = MIB / 512 - 1;
    assert_eq!(put(e, &h, &mut q, nsid, 0, 0x11, buf), Status::SUCCESS);
    assert_eq!(put(e, &h, &mut q, nsid, last, 0x22, buf), Status::SUCCESS);
    e.resize_namespace(nsid, 4 * MIB).unwrap();
    assert_eq!(e.namespace_size(nsid), Some(4 * MIB));
    assert_eq!(get(e, &h, &mut q, nsid, 0, buf), (Status::SUCCESS, 0x11));
    assert_eq!(get(e, &h, &mut q, nsid, last, buf), (Status::SUCCESS, 0x22));
    assert_eq!(
        get(e, &h, &mut q, nsid, last + 1, buf),
        (Status::SUCCESS, 0),
        "grown: zeroes"
    );
    let end = 4 * MIB / 512 - 1;
    assert_eq!(put(e, &h, &mut q, nsid, end, 0x33, buf), Status::SUCCESS);
    assert_eq!(get(e, &h, &mut q, nsid, end, buf), (Status::SUCCESS, 0x33));
    e.resize_namespace(nsid, MIB / 2).unwrap();
    assert_eq!(get(e, &h, &mut q, nsid, 0, buf), (Status::SUCCESS, 0x11));
    assert_eq!(
        get(e, &h, &mut q, nsid, MIB / 1024, buf).0,
        Status::LBA_OUT_OF_RANGE.dnr(),
        "shrunk: past the new end"
    );
    e.resize_namespace(nsid, 4 * MIB).unwrap();
    for lba in [last, end] {
        assert_eq!(
            get(e, &h, &mut q, nsid, lba, buf),
            (Status::SUCCESS, 0),
            "what a shrink cut off is gone, not back on regrowth (LBA {lba})"
        );
    }
}

#[test]
fn a_ram_namespace_grows_and_shrinks_under_its_data() {
    let e = engine(vec![ram(MIB)], 1, 8 * MIB);
    resize_keeps_data_and_zeroes_what_it_adds(&e, 1);
    let err = e.resize_namespace(1, 9 * MIB).unwrap_err();
    assert!(matches!(err, EngineError::Capacity { .. }), "{err}");
    let err = e.resize_namespace(1, 1000).unwrap_err().to_string();
    assert!(err.contains("multiple of its LBA size 512"), "{err}");
}

#[test]
fn a_file_namespace_grows_and_shrinks_its_image() {
    for io in [Choice::IoUring, Choice::Threads] {
        if io == Choice::IoUring && crate::aio::choose(io, true).is_err() {
            continue;
        }
        let p = TempPath::new("/dev/shm", "ns-resize");
        let e = engine(vec![file(&p.0, MIB, io)], 1, 8 * MIB);
        resize_keeps_data_and_zeroes_what_it_adds(&e, 1);
        assert_eq!(
            std::fs::metadata(&p.0).unwrap().len(),
            4 * MIB,
            "the image follows"
        );
        e.stop();
        e.release_files();
    }
}

/// One removal of a file namespace with 48 writes submitted: returns how
/// many were in flight to the file when the removal began.
fn remove_with_writes_in_flight(
    e: &Engine,
    h: &mut MockHost,
    q: &mut HostQueue,
    bufs: u64,
    trial: u8,
) -> u32 {
    use std::os::fd::AsRawFd;
    // On a disk, with the write cache off (RWF_DSYNC): each write takes
    // the disk's time, so the removal meets them in flight.
    let p = TempPath::new(&std::env::temp_dir().to_string_lossy(), "ns-remove");
    let n = e
        .add_namespace(&file(&p.0, 4 * MIB, Choice::Threads), None, true)
        .unwrap();
    for i in 0..48u64 {
        h.mem.write(bufs + i * 65536, &[i as u8 ^ trial; 65536]);
        let mut s = Sqe::new(op::WRITE, i as u16, n);
        s.set_lba_range(i * 128, 128);
        // 16 pages: an SGL data block instead of a PRP list.
        s.dw[0] |= 1 << 14;
        let a = bufs + i * 65536;
        s.dw[6] = a as u32;
        s.dw[7] = (a >> 32) as u32;
        s.dw[8] = 65536;
        q.push(&s);
    }
    q.ring_sq(e);
    // Remove as soon as the worker has handed writes to the file.
    let ns = e.shared.namespace(n).unwrap();
    let t = std::time::Instant::now();
    let mut inflight = 0;
    while inflight == 0 && t.elapsed() < Duration::from_millis(200) {
        inflight = ns.inflight.load(Ordering::Relaxed);
    }
    drop(ns);
    e.remove_namespace(n).unwrap();
    // Nothing holds the image any more: an exclusive lock is free.
    let f = std::fs::File::open(&p.0).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let mut img = vec![0u8; 4 * MIB as usize];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut img, 0).unwrap();
    let mut done = Vec::new();
    while done.len() < 48 {
        done.push(q.wait(Duration::from_secs(10)).expect("a command was lost"));
    }
    q.ring_cq(e);
    let mut cids: Vec<u16> = done.iter().map(|c| c.cid).collect();
    cids.sort_unstable();
    assert_eq!(
        cids,
        (0..48).collect::<Vec<_>>(),
        "each command completes once"
    );
    for c in done {
        let i = u64::from(c.cid);
        let at = (i * 65536) as usize;
        match c.status() {
            // Completed: in the image when the removal returned.
            Status::SUCCESS => assert!(
                img[at..at + 65536].iter().all(|&b| b == i as u8 ^ trial),
                "write {i} completed but is not in the image"
            ),
            // Fetched after the removal: an inactive NSID.
            st => assert_eq!(st, Status::INVALID_FIELD.dnr(), "write {i}"),
        }
    }
    inflight
}

#[test]
fn a_removed_file_namespace_lets_go_of_its_image_once_its_commands_are_done() {
    let e = engine(vec![ram(MIB)], 2, 64 * MIB);
    e.set_write_cache(false);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 8 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 64, 1, false).unwrap();
    let bufs = h.alloc(48 * 64 * 1024);
    // The removal must have met commands in flight at least once for the
    // test to mean anything; every trial checks the outcome.
    let mut met = 0;
    for trial in 0..40u8 {
        if remove_with_writes_in_flight(&e, &mut h, &mut q, bufs, trial) > 0 {
            met += 1;
            if met >= 3 {
                return;
            }
        }
    }
    panic!("in 40 trials the removal met commands in flight to the file only {met} times");
}
