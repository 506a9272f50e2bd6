//! Interrupt behaviour of the whole device, through the driver mock:
//! coalescing, IEN = 0, INTx levels, MSI masking by INTMS, MSI-X enable.

use super::*;
use crate::driver::{HostQueue, MockHost};
use crate::irq::tests::{drain, eventfd};
use crate::irq::IrqMode;
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32};
use std::time::{Duration, Instant};

fn engine(managed: bool) -> Engine {
    Engine::new(EngineConfig {
        namespaces: vec![NamespaceSpec {
            size_bytes: 1 << 20,
            lba_size: 512,
            backend: "null".into(),
            ..NamespaceSpec::default()
        }],
        msix_vectors: 4,
        max_qid: 3,
        max_queue_entries: 256,
        mdts_bytes: 0,
        poll_us: 50,
        msix_embedder_managed: managed,
        polling: Polling::Adaptive,
        iothreads: 1,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn: 0,
        capacity_bytes: 0,
    })
    .unwrap()
}

fn read(cid: u16, buf: u64) -> Sqe {
    let mut s = Sqe::new(op::READ, cid, 1);
    s.set_prps(buf, 0);
    s
}

/// Submits one read and polls its completion without ringing the CQ head.
fn run_one(e: &Engine, q: &mut HostQueue, cid: u16, buf: u64) -> Cqe {
    q.push(&read(cid, buf));
    q.ring_sq(e);
    q.wait(Duration::from_secs(5)).expect("no completion")
}

fn counter(e: &Engine, name: &str) -> u64 {
    e.counters()
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap()
        .1
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A started engine with queue pair 1 on vector 1 (its eventfd returned),
/// and a 4 KiB buffer: what the coalescing tests start from.
fn vector_1_queue() -> (Engine, std::os::fd::OwnedFd, MockHost, HostQueue, u64) {
    let e = engine(true);
    e.start().unwrap();
    let fd = eventfd();
    e.set_vector_eventfd(1, Some(fd.as_raw_fd())).unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let q = h.create_queue_pair(&e, 1, 64, 1, true).unwrap();
    let buf = h.alloc(4096);
    (e, fd, h, q, buf)
}

#[test]
fn coalescing_fires_at_threshold_or_time() {
    let (e, fd, _h, mut q, buf) = vector_1_queue();
    // 8 entries or 25.5 ms, whichever first.
    e.set_coalescing(7, 255);
    for cid in 0..8 {
        run_one(&e, &mut q, cid, buf);
        q.ring_cq(&e);
    }
    // The CQE is visible before the worker signals: wait for the signal.
    wait_until("the threshold interrupt", || drain(&fd) == 1);
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(drain(&fd), 0, "eight completions, one interrupt");
    for cid in 8..11 {
        run_one(&e, &mut q, cid, buf);
        q.ring_cq(&e);
    }
    assert_eq!(drain(&fd), 0, "three completions are held");
    wait_until("the aggregation time", || drain(&fd) == 1);
    assert!(counter(&e, "coalescing_timeouts") >= 1);
    // CD on the vector: every completion signals.
    e.set_coalescing_disabled(1, true).unwrap();
    run_one(&e, &mut q, 11, buf);
    q.ring_cq(&e);
    wait_until("the uncoalesced interrupt", || drain(&fd) == 1);
    assert!(e.set_coalescing_disabled(4, true).is_err());
}

#[test]
fn a_held_interrupt_fires_after_its_worker_lost_its_last_sq() {
    let (e, fd, _h, mut q, buf) = vector_1_queue();
    // 8 entries or 10 ms: one completion is held for the time.
    e.set_coalescing(7, 100);
    run_one(&e, &mut q, 0, buf);
    q.ring_cq(&e);
    e.delete_sq(1).unwrap();
    wait_until("the held interrupt of a worker with no SQ", || {
        drain(&fd) == 1
    });
    // And the worker then sleeps rather than spinning on a past deadline.
    let sleeps = counter(&e, "worker_sleeps");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        counter(&e, "worker_sleeps") - sleeps < 300,
        "the idle worker kept waking"
    );
}

#[test]
fn ien_zero_never_signals() {
    let e = engine(true);
    e.start().unwrap();
    let fd = eventfd();
    e.set_vector_eventfd(2, Some(fd.as_raw_fd())).unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 2, false).unwrap();
    let buf = h.alloc(4096);
    for cid in 0..40 {
        run_one(&e, &mut q, cid, buf);
        q.ring_cq(&e);
    }
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(drain(&fd), 0);
    assert_eq!(counter(&e, "interrupts"), 0);
    assert!(e.pending_vectors().is_empty(), "nothing is even pending");
}

#[test]
fn intx_level_follows_unconsumed_entries_and_intms() {
    let e = engine(true);
    e.start().unwrap();
    let trigger = eventfd();
    let resample = eventfd();
    e.set_intx_eventfds(Some(trigger.as_raw_fd()), Some(resample.as_raw_fd()))
        .unwrap();
    let level = Arc::new(AtomicI32::new(-1));
    let lv = level.clone();
    e.set_intx_callback(Some(Arc::new(move |up| {
        lv.store(i32::from(up), Ordering::SeqCst)
    })));
    e.set_irq_mode(IrqMode::Intx);
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 0, true).unwrap();
    let buf = h.alloc(4096);
    run_one(&e, &mut q, 1, buf);
    wait_until("assertion", || level.load(Ordering::SeqCst) == 1);
    assert!(e.intx_asserted());
    assert!(drain(&trigger) >= 1);
    // The guest EOIs without consuming: KVM signals resample; still high.
    crate::irq::eventfd_signal(&resample).unwrap();
    wait_until("re-assertion after resample", || drain(&trigger) >= 1);
    // The host catches up: the line drops.
    q.ring_cq(&e);
    wait_until("deassertion", || level.load(Ordering::SeqCst) == 0);
    assert!(!e.intx_asserted());
    // INTMS bit 0 masks the pin even with entries outstanding.
    e.set_interrupt_mask(1);
    run_one(&e, &mut q, 2, buf);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!e.intx_asserted());
    e.set_interrupt_mask(0);
    wait_until("assertion after INTMC", || e.intx_asserted());
    q.ring_cq(&e);
    wait_until("deassertion", || !e.intx_asserted());
    assert_eq!(
        e.pending_vectors(),
        Vec::<u32>::new(),
        "MSI-X vectors stay out of pin mode"
    );
}

#[test]
fn msi_mode_holds_masked_vectors_until_intmc() {
    let e = engine(true);
    e.start().unwrap();
    let fd = eventfd();
    e.set_vector_eventfd(1, Some(fd.as_raw_fd())).unwrap();
    e.set_irq_mode(IrqMode::Msi);
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    let buf = h.alloc(4096);
    e.set_interrupt_mask(0b10);
    run_one(&e, &mut q, 1, buf);
    q.ring_cq(&e);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(drain(&fd), 0);
    wait_until("pending", || e.pending_vectors() == vec![1]);
    e.set_interrupt_mask(0);
    assert_eq!(drain(&fd), 1);
}

#[test]
fn device_managed_msix_starts_disabled_and_masked() {
    let e = engine(false);
    e.start().unwrap();
    let fd = eventfd();
    e.set_vector_eventfd(1, Some(fd.as_raw_fd())).unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    let buf = h.alloc(4096);
    assert_eq!(e.msix_control(), (false, false));
    run_one(&e, &mut q, 1, buf);
    q.ring_cq(&e);
    wait_until("pending", || e.pending_vectors() == vec![1]);
    e.set_msix_control(true, false);
    assert_eq!(drain(&fd), 0, "the entry is still masked");
    e.set_msix_entry(1, 0xfee0_0000, 0x41, false).unwrap();
    assert_eq!(drain(&fd), 1);
    e.msix_reset();
    assert_eq!(e.msix_control(), (false, false));
    assert_eq!(e.msix_entry(1).unwrap(), (0, 0, true));
}

#[test]
fn callback_notifier_runs_without_locks() {
    let e = Arc::new(engine(true));
    e.start().unwrap();
    let hits = Arc::new(AtomicU32::new(0));
    let (h2, e2) = (hits.clone(), Arc::downgrade(&e));
    // The callback calls back into the engine: it must not deadlock.
    e.set_vector_callback(
        1,
        Arc::new(move |v| {
            if let Some(e) = e2.upgrade() {
                let _ = e.pending_vectors();
                let _ = e.counters();
            }
            assert_eq!(v, 1);
            h2.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, true).unwrap();
    let buf = h.alloc(4096);
    for cid in 0..5 {
        run_one(&e, &mut q, cid, buf);
        q.ring_cq(&e);
    }
    wait_until("callbacks", || hits.load(Ordering::SeqCst) >= 1);
    e.stop();
}
