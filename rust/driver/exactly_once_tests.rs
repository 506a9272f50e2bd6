//! The exactly-once oracle over every doorbell mode, polling mode, one and
//! two iothreads, QD 1, 2, 16 and a full queue, across ring wraps, with the
//! host flat out and with random pauses. `NVMEFAST_SOAK=seconds` turns
//! [`soak`] into a long randomised run over the same axes.

use super::exactly_once::{run, Doorbell, Fault, Plan, Reap, Storage};
use super::Rng;
use crate::aio::Choice;
use crate::engine::Polling;
use std::time::{Duration, Instant};

const POLLINGS: [Polling; 3] = [Polling::Adaptive, Polling::Interrupt, Polling::Poll];

fn plans(doorbell: Doorbell) -> Vec<Plan> {
    let mut out = Vec::new();
    for polling in POLLINGS {
        for iothreads in [1u16, 2] {
            for qd in [1u32, 2, 16, 31] {
                for pause in [0u32, 20] {
                    let mut p = Plan::new(doorbell, polling, iothreads, qd);
                    // 32 entries: 1000 commands wrap each ring 31 times.
                    p.commands = 1000;
                    p.pause_per_mille = pause;
                    p.seed = u64::from(qd) * 7 + u64::from(pause) + u64::from(iothreads) * 131;
                    p.reap = if (qd + u32::from(iothreads)) % 2 == 0 {
                        Reap::Irq
                    } else {
                        Reap::Poll
                    };
                    out.push(p);
                }
            }
        }
    }
    out
}

fn run_all(doorbell: Doorbell) {
    let mut total = 0;
    for p in plans(doorbell) {
        let r = run(&p);
        assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
        assert_eq!(r.completed, p.commands * u64::from(p.iothreads), "{p:?}");
        total += r.completed;
    }
    eprintln!("{doorbell:?}: {total} commands, each completed exactly once");
}

/// File namespaces complete commands asynchronously and out of order
/// (io_uring, the thread pool): the same oracle over MMIO and shadow
/// doorbells, every polling mode, one and two iothreads.
#[test]
fn exactly_once_with_file_namespaces() {
    let mut total = 0;
    for io in [Choice::IoUring, Choice::Threads, Choice::Inline] {
        for doorbell in [Doorbell::Mmio, Doorbell::Shadow] {
            for mut p in plans(doorbell) {
                if p.qd == 2 {
                    continue;
                }
                p.storage = Storage::File(io);
                p.commands = 400;
                let r = run(&p);
                assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
                assert_eq!(r.completed, p.commands * u64::from(p.iothreads), "{p:?}");
                total += r.completed;
            }
        }
    }
    eprintln!("file namespaces: {total} commands, each completed exactly once");
}

/// Fault rules armed (failed, delayed, corrupted commands; dropped and late
/// interrupts) in every doorbell and polling mode: each command still
/// completes exactly once, out of order where delayed.
#[test]
fn exactly_once_with_fault_rules() {
    let (mut total, mut injected) = (0, 0);
    for doorbell in Doorbell::ALL {
        for p in plans(doorbell) {
            if p.pause_per_mille != 0 || p.qd == 2 {
                continue;
            }
            let mut p = p;
            p.faults = true;
            p.commands = 500;
            let r = run(&p);
            assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
            assert_eq!(r.completed, p.commands * u64::from(p.iothreads), "{p:?}");
            total += r.completed;
            injected += r.injected;
        }
    }
    assert!(
        injected > total / 40,
        "{injected} of {total} failed by rule (about 1 in 20 expected)"
    );
    eprintln!("with fault rules: {total} commands, each completed exactly once ({injected} failed by rule)");
}

#[test]
fn exactly_once_with_mmio_doorbells() {
    run_all(Doorbell::Mmio);
}

#[test]
fn exactly_once_with_shadow_doorbells() {
    run_all(Doorbell::Shadow);
}

#[test]
fn exactly_once_with_the_doorbell_page() {
    run_all(Doorbell::Page);
}

#[test]
fn exactly_once_with_ioeventfds() {
    run_all(Doorbell::Ioeventfd);
}

/// The oracle must see the faults it exists for: a host that rings a tail
/// past what it wrote gets strays, one that never rings loses commands.
#[test]
fn the_oracle_catches_a_replay_and_a_loss() {
    use super::exactly_once::engine_for;
    use super::MockHost;
    use crate::spec::{opcode::io, Sqe};
    let p = Plan::new(Doorbell::Mmio, Polling::Adaptive, 1, 1);
    let e = engine_for(&p).unwrap();
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 8, 1, false).unwrap();
    let buf = h.alloc(4096);
    let mut s = Sqe::new(io::READ, 1, 1);
    s.set_prps(buf, 0);
    q.push(&s);
    // Tail 3 for one command: slots 1 and 2 were never written.
    e.doorbell_write(2, 3).unwrap();
    let c = q.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(c.cid, 1);
    let stray = q.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(stray.cid, 0, "a zeroed slot was fetched");
    assert_ne!(stray.status(), crate::spec::Status::SUCCESS);
    // A host whose doorbell writes never arrive loses every command: the
    // harness says Lost (with the CIDs) instead of hanging or passing.
    // (Not a page nobody scans: a worker still on its way to sleep reads
    // the page, so that loss depends on timing.)
    let mut lossy = Plan::new(Doorbell::Mmio, Polling::Interrupt, 1, 2);
    lossy.timeout = Duration::from_millis(100);
    lossy.commands = 10;
    lossy.mute = true;
    let r = run(&lossy);
    assert!(
        matches!(r.faults.as_slice(), [Fault::Lost { qid: 1, cids, .. }] if !cids.is_empty()),
        "{:?}",
        r.faults
    );
}

/// `NVMEFAST_SOAK=seconds cargo test --release soak -- --nocapture`: random
/// plans over every axis until the time is up.
#[test]
fn soak() {
    let Some(secs) = std::env::var("NVMEFAST_SOAK")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let until = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng::seeded(secs ^ 0x50a4);
    let (mut runs, mut commands) = (0u64, 0u64);
    while Instant::now() < until {
        let doorbell = Doorbell::ALL[rng.below(4) as usize];
        let polling = POLLINGS[rng.below(3) as usize];
        let entries = [2u32, 3, 8, 32, 128, 1024][rng.below(6) as usize];
        let mut p = Plan::new(doorbell, polling, 1 + rng.below(2) as u16, 1);
        p.entries = entries;
        p.qd = 1 + rng.below(u64::from(entries - 1)) as u32;
        p.commands = 2000 + rng.below(20_000);
        p.pause_per_mille = [0, 0, 5, 50][rng.below(4) as usize];
        p.reap = if rng.below(2) == 0 {
            Reap::Poll
        } else {
            Reap::Irq
        };
        p.seed = rng.next_u64();
        p.faults = rng.below(4) == 0;
        p.storage = [
            Storage::Ram,
            Storage::File(Choice::IoUring),
            Storage::File(Choice::Threads),
            Storage::File(Choice::Inline),
        ][rng.below(4) as usize];
        let r = run(&p);
        assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
        runs += 1;
        commands += r.completed;
    }
    eprintln!("soak: {runs} runs, {commands} commands, 0 faults");
}

/// The doorbell fuzz target's programs as a property (what `cargo fuzz run
/// doorbells` explores with coverage guidance): random programs in every
/// mode keep the exactly-once promise.
#[test]
fn random_doorbell_programs_keep_exactly_once() {
    let mut rng = Rng::seeded(0xd00b);
    let mut commands = 0;
    for k in 0..48u64 {
        let len = 16 + rng.below(200) as usize;
        let mut input: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        input[0] = (k % 12) as u8;
        let r = super::doorbell_fuzz::run(&input);
        assert!(r.faults.is_empty(), "input {input:?}: {:?}", r.faults);
        assert_eq!(r.completed, r.submitted);
        commands += r.completed;
    }
    assert!(commands > 100, "the programs submitted almost nothing");
}

/// The protection information path under the oracle: a namespace with
/// type 1 PI (MS 8), every read with PRACT and the guard and reference tag
/// checked, over every doorbell mode and polling mode, QD 1 and a full
/// queue: each command completes once, successfully.
#[test]
fn exactly_once_with_protection_information() {
    let mut total = 0;
    for doorbell in Doorbell::ALL {
        for polling in POLLINGS {
            for qd in [1u32, 31] {
                let mut p = Plan::new(doorbell, polling, 2, qd);
                p.commands = 500;
                p.pi = true;
                p.pause_per_mille = if qd == 1 { 20 } else { 0 };
                p.seed = u64::from(qd) * 17 + 3;
                let r = run(&p);
                assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
                assert_eq!(r.completed, p.commands * 2, "{p:?}");
                total += r.completed;
            }
        }
    }
    eprintln!("PI: {total} commands, each completed exactly once");
}

/// The namespace table changing all along (namespaces added, resized,
/// detached, attached, removed; the one being read grown and shrunk back
/// under the reads): every read of namespace 1 still completes exactly
/// once and succeeds, on RAM and on a file, in every polling mode, with one
/// and two iothreads.
#[test]
fn exactly_once_while_namespaces_change() {
    let (mut total, mut churned) = (0, 0);
    for storage in [Storage::Ram, Storage::File(Choice::Threads)] {
        for doorbell in [Doorbell::Mmio, Doorbell::Shadow] {
            for polling in POLLINGS {
                for (iothreads, qd) in [(1u16, 1u32), (2, 16), (1, 31)] {
                    let mut p = Plan::new(doorbell, polling, iothreads, qd);
                    p.storage = storage;
                    p.churn = true;
                    p.commands = 600;
                    p.pause_per_mille = 10;
                    p.seed = u64::from(qd) * 13 + u64::from(iothreads);
                    p.reap = if qd % 2 == 0 { Reap::Irq } else { Reap::Poll };
                    let r = run(&p);
                    assert!(r.faults.is_empty(), "{p:?}: {:?}", r.faults);
                    assert_eq!(r.completed, p.commands * u64::from(p.iothreads), "{p:?}");
                    total += r.completed;
                    churned += r.churned;
                }
            }
        }
    }
    assert!(churned > 0, "the table never changed");
    eprintln!("{total} reads, each completed exactly once, across {churned} table changes");
}
