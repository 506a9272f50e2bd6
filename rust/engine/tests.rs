//! Engine tests through the driver mock: the queue and interrupt path as a
//! host driver exercises it, without Python.

use super::*;
use crate::driver::{HostQueue, MockHost};
use crate::irq::tests::{drain, eventfd};
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub(super) fn engine(poll_us: u64, mdts_bytes: u64) -> Engine {
    Engine::new(EngineConfig {
        namespaces: vec![
            NamespaceSpec {
                size_bytes: 1 << 20,
                lba_size: 512,
                backend: "ram".into(),
                ..NamespaceSpec::default()
            },
            NamespaceSpec {
                size_bytes: 1 << 20,
                lba_size: 4096,
                backend: "null".into(),
                ..NamespaceSpec::default()
            },
        ],
        msix_vectors: 4,
        max_qid: 3,
        max_queue_entries: 1024,
        mdts_bytes,
        poll_us,
        msix_embedder_managed: true,
        polling: Polling::Adaptive,
        iothreads: 1,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn: 0,
        capacity_bytes: 0,
    })
    .unwrap()
}

fn wait(e: &Engine, q: &mut HostQueue) -> Cqe {
    let c = q.wait(Duration::from_secs(5)).expect("no completion");
    q.ring_cq(e);
    c
}

fn rw(opcode: u8, cid: u16, nsid: u32, slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
    let mut s = Sqe::new(opcode, cid, nsid);
    s.set_prps(prp1, prp2);
    s.set_lba_range(slba, nlb);
    s
}

#[test]
fn write_then_read_back_with_prp_list() {
    let e = engine(50, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 4 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    // 5 pages through PRP1 at an offset, PRP2 -> list.
    let len = 5 * 4096 - 512;
    let buf = h.alloc(6 * 4096);
    let list = h.alloc(4096);
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    h.mem.write(buf + 512, &data);
    for k in 0..4u64 {
        h.mem
            .write(list + k * 8, &(buf + (k + 1) * 4096).to_le_bytes());
    }
    q.push(&rw(op::WRITE, 1, 1, 8, (len / 512) as u32, buf + 512, list));
    q.ring_sq(&e);
    let c = wait(&e, &mut q);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!((c.cid, c.sqid, c.sqhd), (1, 1, 1));
    let out = h.alloc(5 * 4096);
    let list2 = h.alloc(4096);
    for k in 0..4u64 {
        h.mem
            .write(list2 + k * 8, &(out + (k + 1) * 4096).to_le_bytes());
    }
    q.push(&rw(op::READ, 2, 1, 8, (len / 512) as u32, out, list2));
    q.ring_sq(&e);
    assert!(wait(&e, &mut q).status().is_success());
    let mut back = vec![0u8; len];
    h.mem.read(out, &mut back);
    assert_eq!(back, data);
    let s = e.smart();
    assert_eq!((s.host_read_commands, s.host_write_commands), (1, 1));
    assert_eq!(s.bytes_written, len as u64);
}

#[test]
fn bad_input_gets_the_spec_status() {
    let e = engine(50, 8192);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 8, 1, false).unwrap();
    let buf = h.alloc(8192);
    let cases = [
        (
            rw(op::READ, 1, 1, 2047, 2, buf, 0),
            Status::LBA_OUT_OF_RANGE.dnr(),
        ),
        (
            rw(op::READ, 2, 1, u64::MAX, 1, buf, 0),
            Status::LBA_OUT_OF_RANGE.dnr(),
        ),
        (
            rw(op::READ, 3, 1, 0, 17, buf, 0),
            Status::INVALID_FIELD.dnr(),
        ),
        (
            rw(op::READ, 4, 1, 0, 1, 0xdead_0000, 0),
            Status::DATA_TRANSFER_ERROR.dnr(),
        ),
        (
            rw(op::READ, 5, 1, 0, 16, buf, buf + 4100),
            Status::INVALID_PRP_OFFSET.dnr(),
        ),
        (
            rw(op::READ, 6, 9, 0, 1, buf, 0),
            Status::INVALID_NAMESPACE.dnr(),
        ),
        (
            rw(op::READ, 7, 0, 0, 1, buf, 0),
            Status::INVALID_NAMESPACE.dnr(),
        ),
        (rw(0x7f, 8, 1, 0, 1, buf, 0), Status::INVALID_OPCODE.dnr()),
        (
            rw(op::FLUSH, 9, 0xffff_ffff, 0, 1, 0, 0),
            Status::INVALID_NAMESPACE.dnr(),
        ),
    ];
    for (sqe, want) in cases {
        q.push(&sqe);
        q.ring_sq(&e);
        let c = wait(&e, &mut q);
        assert_eq!(c.cid, sqe.cid());
        assert_eq!(c.status(), want, "{sqe:?}");
    }
    let errs = e.take_errors();
    assert_eq!(errs.len(), 9);
    assert_eq!(errs[0].failure.lba, 2047);
    assert!(!e.fatal(), "bad commands are not fatal");
    // The controller still works afterwards.
    q.push(&rw(op::WRITE, 10, 1, 0, 1, buf, 0));
    q.ring_sq(&e);
    assert!(wait(&e, &mut q).status().is_success());
}

#[test]
fn phase_survives_many_wraps_and_irq_batches() {
    let e = engine(0, 0);
    e.start().unwrap();
    let efd = eventfd();
    e.set_vector_eventfd(2, Some(efd.as_raw_fd())).unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 2, 4, 2, true).unwrap();
    let buf = h.alloc(4096);
    for i in 0..2000u16 {
        q.push(&rw(op::READ, i, 2, u64::from(i % 256), 1, buf, 0));
        q.ring_sq(&e);
        let c = wait(&e, &mut q);
        assert_eq!(c.cid, i);
        assert!(c.status().is_success());
    }
    assert!(drain(&efd) >= 1);
    let c: std::collections::HashMap<_, _> = e.counters().into_iter().collect();
    assert_eq!(c["io_commands"], 2000);
    assert!(c["interrupts"] >= 1 && c["interrupts"] <= 2000);
}

#[test]
fn cq_flow_control_never_overwrites() {
    let e = engine(50, 0);
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    // SQ of 8 on a CQ of 4: at most 3 completions fit until the host consumes.
    let sq = h.alloc(8 * 64);
    let cq = h.alloc(4 * 16);
    e.create_cq(1, cq, 4, 1, false).unwrap();
    e.create_sq(1, sq, 8, 1).unwrap();
    let mut q = HostQueue::new(&h.mem, 1, 8, sq, cq);
    let buf = h.alloc(4096);
    e.start().unwrap();
    for i in 0..7u16 {
        q.push(&rw(op::READ, i, 1, 0, 1, buf, 0));
    }
    q.ring_sq(&e);
    std::thread::sleep(Duration::from_millis(50));
    // Take the three posted completions without telling the device yet.
    // HostQueue's CQ view is 8 entries; read the 4-entry CQ by hand.
    let mut seen = Vec::new();
    for slot in 0..4u64 {
        let mut b = [0u8; 16];
        h.mem.read(cq + slot * 16, &mut b);
        let c = Cqe::from_words(
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        );
        if c.phase() {
            seen.push(c.cid);
        }
    }
    assert_eq!(
        seen,
        vec![0, 1, 2],
        "a 4-entry CQ holds 3 and leaves one slot empty"
    );
    let c: std::collections::HashMap<_, _> = e.counters().into_iter().collect();
    assert!(c["cq_full_stalls"] >= 1);
    // Consume them: the rest flows.
    e.doorbell_write(3, 3).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut b = [0u8; 16];
    h.mem.read(cq + 3 * 16, &mut b);
    let c3 = Cqe::from_words(
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    );
    assert_eq!(c3.cid, 3);
}

#[test]
fn masked_vector_buffers_and_unmask_fires_once() {
    let e = engine(50, 0);
    e.start().unwrap();
    let efd = eventfd();
    e.set_vector_eventfd(1, Some(efd.as_raw_fd())).unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    let buf = h.alloc(4096);
    e.mask_vector(1, true).unwrap();
    for i in 0..5u16 {
        q.push(&rw(op::READ, i, 1, 0, 1, buf, 0));
        q.ring_sq(&e);
        wait(&e, &mut q);
    }
    assert_eq!(drain(&efd), 0, "no signal while masked");
    assert_eq!(e.pending_vectors(), vec![1]);
    e.mask_vector(1, false).unwrap();
    assert_eq!(drain(&efd), 1, "exactly one on unmask");
    assert!(e.pending_vectors().is_empty());
    e.mask_vector(1, true).unwrap();
    e.mask_vector(1, false).unwrap();
    assert_eq!(drain(&efd), 0, "none on unmask without pending");
}

#[test]
fn queue_api_rejects_misuse() {
    let e = engine(50, 0);
    assert!(matches!(
        e.create_cq(4, 0x1000, 16, 0, true),
        Err(EngineError::Queue(QueueError::QidOutOfRange { .. }))
    ));
    assert!(matches!(
        e.create_cq(1, 0x1000, 1, 0, true),
        Err(EngineError::Queue(QueueError::BadSize { .. }))
    ));
    assert!(matches!(
        e.create_cq(1, 0x1000, 16, 4, true),
        Err(EngineError::Queue(QueueError::BadVector { .. }))
    ));
    assert!(matches!(
        e.create_sq(1, 0x1000, 16, 1),
        Err(EngineError::Queue(QueueError::Missing { qid: 1 }))
    ));
    e.create_cq(1, 0x1000, 16, 0, true).unwrap();
    assert!(matches!(
        e.create_cq(1, 0x1000, 16, 0, true),
        Err(EngineError::Queue(QueueError::Exists { qid: 1 }))
    ));
    e.create_sq(1, 0x2000, 16, 1).unwrap();
    assert!(e.cq_in_use(1));
    assert!(matches!(
        e.delete_cq(1),
        Err(EngineError::Queue(QueueError::InUse { .. }))
    ));
    e.delete_sq(1).unwrap();
    e.delete_cq(1).unwrap();
    assert!(!e.cq_exists(1));
    assert!(
        e.doorbell_write(2, 0).is_err(),
        "doorbell of a deleted queue"
    );
    assert!(e.set_page_size(8192).is_ok());
    assert!(e.set_page_size(1000).is_err());
}

#[test]
fn reset_drops_queues_and_unmap_during_io_is_safe() {
    let e = Arc::new(engine(50, 0));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 64, 1, false).unwrap();
    let fd2 = crate::mem::tests::memfd(1 << 20);
    e.map_dma(0x8000_0000, 1 << 20, fd2.as_raw_fd(), 0, true)
        .unwrap();
    let e2 = e.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2));
        e2.unmap_dma(0x8000_0000, 1 << 20).unwrap();
    });
    let mut ok = 0;
    let mut dte = 0;
    for i in 0..2000u16 {
        q.push(&rw(
            op::READ,
            i,
            1,
            0,
            8,
            0x8000_0000 + u64::from(i % 64) * 4096,
            0,
        ));
        q.ring_sq(&e);
        let c = wait(&e, &mut q);
        if c.status().is_success() {
            ok += 1;
        } else {
            assert_eq!(c.status(), Status::DATA_TRANSFER_ERROR.dnr());
            dte += 1;
        }
    }
    t.join().unwrap();
    assert_eq!(ok + dte, 2000);
    assert!(
        dte > 0,
        "reads after the unmap fail with Data Transfer Error"
    );
    e.reset();
    assert!(!e.sq_exists(1) && !e.cq_exists(1));
    assert!(e.doorbell_write(2, 1).is_err());
}

#[test]
fn unreadable_sq_sets_cfs() {
    let e = engine(50, 0);
    e.start().unwrap();
    let h = MockHost::new(&e, 1 << 20).unwrap();
    let cq = MockHost::IOVA;
    e.create_cq(1, cq, 4, 1, false).unwrap();
    e.create_sq(1, 0xdead_0000, 4, 1).unwrap();
    e.doorbell_write(2, 1).unwrap();
    let t = Instant::now();
    while !e.fatal() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(h);
    e.reset();
    assert!(!e.fatal(), "reset clears CFS");
}

struct Echo;
impl AdminHandler for Echo {
    fn handle(&self, sqe: &Sqe) -> AdminOutcome {
        if sqe.opcode() == 0x0c {
            AdminOutcome::Deferred
        } else {
            AdminOutcome::Complete {
                status: Status::SUCCESS,
                dw0: sqe.cdw(10),
            }
        }
    }
}

#[test]
fn admin_queue_goes_through_the_handler_and_deferred_completes() {
    let e = engine(50, 0);
    e.set_admin_handler(Some(Arc::new(Echo)));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 0, 8, 0, true).unwrap();
    let mut aer = Sqe::new(0x0c, 7, 0);
    aer.dw[10] = 0;
    q.push(&aer);
    let mut get = Sqe::new(0x0a, 8, 0);
    get.dw[10] = 0x1234;
    q.push(&get);
    q.ring_sq(&e);
    let c = wait(&e, &mut q);
    assert_eq!((c.cid, c.dw0), (8, 0x1234));
    assert!(matches!(
        e.complete_admin(8, Status::SUCCESS, 0, 0),
        Err(EngineError::NotDeferred { cid: 8 })
    ));
    e.complete_admin(7, Status::SUCCESS, 0x0001_0100, 0)
        .unwrap();
    let c = wait(&e, &mut q);
    assert_eq!((c.cid, c.dw0, c.sqid, c.sqhd), (7, 0x0001_0100, 0, 2));
}

/// An event raised on another thread while the AER handler is still running
/// completes the AER instead of failing (the handler then returns Deferred).
struct RacingAer(std::sync::Mutex<Option<Arc<Engine>>>);
impl AdminHandler for RacingAer {
    fn handle(&self, sqe: &Sqe) -> AdminOutcome {
        let e = self.0.lock().unwrap().clone().unwrap();
        let cid = sqe.cid();
        std::thread::spawn(move || e.complete_admin(cid, Status::SUCCESS, 0x42, 0).unwrap())
            .join()
            .unwrap();
        AdminOutcome::Deferred
    }
}

#[test]
fn complete_admin_while_the_handler_runs() {
    let e = Arc::new(engine(50, 0));
    let h = Arc::new(RacingAer(std::sync::Mutex::new(Some(e.clone()))));
    e.set_admin_handler(Some(h.clone()));
    e.start().unwrap();
    let mut host = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = host.create_queue_pair(&e, 0, 8, 0, true).unwrap();
    q.push(&Sqe::new(0x0c, 5, 0));
    q.ring_sq(&e);
    let c = wait(&e, &mut q);
    assert_eq!((c.cid, c.dw0), (5, 0x42));
    std::thread::sleep(Duration::from_millis(20));
    assert!(q.pop().is_none(), "posted exactly once");
    *h.0.lock().unwrap() = None;
    e.set_admin_handler(None);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Arbitrary SQEs (opcode, NSID, PRPs, LBA fields all random) through the
    /// driver mock: every one completes with some status, in order, and the
    /// device never faults or stops.
    #[test]
    fn random_sqes_always_complete(cmds in proptest::collection::vec(
        (0u8..8, 0u32..4, proptest::num::u64::ANY, proptest::num::u64::ANY, proptest::num::u32::ANY, proptest::num::u32::ANY, 0u32..64),
        1..40,
    )) {
        let e = engine(50, 16384);
        e.start().unwrap();
        let mut h = MockHost::new(&e, 1 << 20).unwrap();
        let mut q = h.create_queue_pair(&e, 1, 64, 1, false).unwrap();
        let base = MockHost::IOVA;
        for (i, (op, nsid, prp1, prp2, slba, flags, nlb)) in cmds.into_iter().enumerate() {
            let mut s = Sqe::new(op, i as u16, nsid);
            // Half the pointers land in mapped memory, half anywhere.
            let p1 = if prp1 & 1 == 0 { base + (prp1 >> 1) % (1 << 20) } else { prp1 };
            let p2 = if prp2 & 1 == 0 { base + (prp2 >> 1) % (1 << 20) } else { prp2 };
            s.set_prps(p1, p2);
            s.dw[0] |= flags & 0xc300; // random PSDT / FUSE bits
            s.dw[10] = slba % 4096;
            s.dw[12] = nlb;
            q.push(&s);
            q.ring_sq(&e);
            let c = wait(&e, &mut q);
            proptest::prop_assert_eq!(c.cid, i as u16);
        }
        proptest::prop_assert!(!e.fatal());
    }
}

#[test]
fn guest_memory_truncated_under_the_device_fails_the_command_not_the_process() {
    use crate::mem::tests::{memfd, truncate};
    use std::sync::Mutex;
    let e = engine(50, 0);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&reports);
    e.set_memory_loss_handler(Some(Arc::new(move |iova, size| {
        r.lock().unwrap().push((iova, size))
    })));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    let lost = memfd(0x10000);
    const AT: u64 = 0x40_0000_0000;
    e.map_dma(AT, 0x10000, lost.as_raw_fd(), 0, true).unwrap();
    truncate(&lost, 0x4000).unwrap();
    // PRP1 past the new end: the worker's copy faults.
    q.push(&rw(op::READ, 1, 1, 0, 8, AT + 0x8000, 0));
    q.ring_sq(&e);
    assert_eq!(wait(&e, &mut q).status(), Status::DATA_TRANSFER_ERROR.dnr());
    // Before the new end: the region is lost as a whole, no fault needed.
    q.push(&rw(op::WRITE, 2, 1, 0, 8, AT, 0));
    q.ring_sq(&e);
    assert_eq!(wait(&e, &mut q).status(), Status::DATA_TRANSFER_ERROR.dnr());
    // The host's own memory still works; the controller is not fatal.
    let buf = h.alloc(4096);
    h.mem.write(buf, &[7u8; 4096]);
    q.push(&rw(op::WRITE, 3, 1, 0, 8, buf, 0));
    q.ring_sq(&e);
    assert!(wait(&e, &mut q).status().is_success());
    assert!(!e.fatal());
    let count = |e: &Engine| {
        e.counters()
            .into_iter()
            .find(|(k, _)| *k == "dma_regions_lost")
            .map(|(_, v)| v)
    };
    assert_eq!(count(&e), Some(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while reports.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*reports.lock().unwrap(), vec![(AT, 0x10000)]);
    assert_eq!(
        e.dma_region_info()
            .iter()
            .map(|r| r.3.name())
            .collect::<Vec<_>>(),
        ["guarded", "lost"]
    );
    e.unmap_dma(AT, 0x10000).unwrap();
}
