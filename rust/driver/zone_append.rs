//! The exactly-once oracle for Zone Append: host threads on several queue
//! pairs (served by one or two workers) keep appends to *one* zone in
//! flight, every block of each append tagged with the append's identity.
//! Checked, with fault rules armed or not:
//!
//! - every append completes exactly once (a CID in flight on its queue,
//!   nothing lost within the timeout);
//! - it succeeded, or failed with the status a rule injected (and then
//!   consumed no block);
//! - the Assigned LBAs (ALBA, DW0/DW1) of the successful appends give
//!   disjoint ranges inside the zone, which together fill it from its start
//!   to its write pointer with no gap;
//! - the data of each append is where its ALBA says (read back through the
//!   device).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::exactly_once::Pauser;
use super::{HostQueue, MockHost, Rng};
use crate::engine::faults::{Action, Firing, Match, QueueMatch};
use crate::engine::{Engine, EngineConfig, NamespaceSpec, Polling};
use crate::spec::opcode::io as op;
use crate::spec::{Sqe, Status};
use crate::zns::ZoneSpec;

/// The status the armed rules fail appends with (accepted, not a fault).
pub const INJECTED: Status = Status::ZONE_IS_FULL;
const LBA: u64 = 512;
/// The zone appended to (of 4 zones of 8192 LBAs).
const ZONE: u64 = 2;
const ZONE_LBAS: u64 = 8192;

/// One run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub polling: Polling,
    pub iothreads: u16,
    /// Queue pairs, each driven by its own host thread.
    pub queues: u16,
    pub qd: u32,
    /// Appends per queue pair (1 to 4 blocks each).
    pub appends: u32,
    pub faults: bool,
    pub pause_per_mille: u32,
    pub seed: u64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub completed: u64,
    pub injected: u64,
    pub blocks: u64,
    pub faults: Vec<String>,
}

/// The tag in the first 8 bytes of each block of an append.
fn tag(qid: u16, seq: u32, block: u64) -> u64 {
    (u64::from(qid) << 48) | (u64::from(seq) << 16) | block
}

fn engine(plan: &Plan) -> Result<Engine, String> {
    let e = Engine::new(EngineConfig {
        namespaces: vec![NamespaceSpec {
            size_bytes: 4 * ZONE_LBAS * LBA,
            lba_size: LBA as u32,
            backend: "ram".into(),
            zones: Some(ZoneSpec {
                size_bytes: ZONE_LBAS * LBA,
                ..ZoneSpec::default()
            }),
            ..NamespaceSpec::default()
        }],
        msix_vectors: plan.queues + 1,
        max_qid: plan.queues + 1,
        max_queue_entries: 1024,
        mdts_bytes: 0,
        poll_us: 50,
        msix_embedder_managed: true,
        polling: plan.polling,
        iothreads: plan.iothreads,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn: 0,
        capacity_bytes: 0,
    })
    .map_err(|e| e.to_string())?;
    if plan.faults {
        let io = Match {
            queue: QueueMatch::Io,
            opcode: Some(op::ZONE_APPEND),
            nsid: None,
            lba: None,
            zone: Some(ZONE),
        };
        let rules = [
            (Action::Status(INJECTED.dnr()), 0.05),
            (
                Action::Delay {
                    ns: 300_000,
                    abortable: false,
                },
                0.05,
            ),
            (Action::DelayIrq { ns: 200_000 }, 0.05),
            (Action::DropIrq, 0.01),
        ];
        for (i, (action, probability)) in rules.into_iter().enumerate() {
            let firing = Firing {
                probability,
                seed: plan.seed.wrapping_add(i as u64),
                ..Firing::default()
            };
            e.add_fault(io, action, firing).map_err(|x| x.to_string())?;
        }
    }
    Ok(e)
}

/// A successful append: where it went and what it carried.
struct Landed {
    alba: u64,
    nlb: u64,
    qid: u16,
    seq: u32,
}

/// One host thread: `plan.appends` appends on `q`, `plan.qd` in flight.
fn drive(
    e: &Engine,
    q: &mut HostQueue,
    mem: &super::HostMemory,
    bufs: u64,
    plan: &Plan,
    seed: u64,
) -> (Vec<Landed>, Report) {
    let mut rng = Rng::seeded(seed);
    let mut pause = Pauser::new(seed ^ 0x77, plan.pause_per_mille, 100);
    let mut r = Report::default();
    // CID -> (sequence number, blocks).
    let mut inflight: HashMap<u16, (u32, u64)> = HashMap::new();
    let mut landed = Vec::new();
    let (mut next, mut last) = (0u32, Instant::now());
    let zslba = ZONE * ZONE_LBAS;
    while (next < plan.appends || !inflight.is_empty()) && r.faults.is_empty() {
        while next < plan.appends && inflight.len() < plan.qd as usize {
            // CID = slot: a slot's buffer is free once its CID completed.
            let cid = (0..plan.qd as u16)
                .find(|c| !inflight.contains_key(c))
                .unwrap_or(0);
            let nlb = 1 + rng.below(4);
            let buf = bufs + u64::from(cid) * 4096;
            for b in 0..nlb {
                let mut block = vec![(next as u8) ^ (q.qid as u8); LBA as usize];
                block[..8].copy_from_slice(&tag(q.qid, next, b).to_le_bytes());
                mem.write(buf + b * LBA, &block);
            }
            let mut s = Sqe::new(op::ZONE_APPEND, cid, 1);
            s.set_prps(buf, 0);
            s.set_lba_range(zslba, nlb as u32);
            q.push(&s);
            inflight.insert(cid, (next, nlb));
            next += 1;
            pause.maybe();
        }
        q.ring_sq(e);
        let mut got = 0;
        while let Some(c) = q.pop() {
            got += 1;
            let Some((seq, nlb)) = inflight.remove(&c.cid) else {
                r.faults.push(format!(
                    "queue {}: stray completion of CID {}",
                    q.qid, c.cid
                ));
                continue;
            };
            r.completed += 1;
            match c.status() {
                Status::SUCCESS => {
                    let alba = u64::from(c.dw0) | (u64::from(c.dw1) << 32);
                    landed.push(Landed {
                        alba,
                        nlb,
                        qid: q.qid,
                        seq,
                    });
                }
                s if plan.faults && s == INJECTED.dnr() => r.injected += 1,
                s => r
                    .faults
                    .push(format!("queue {}: append {seq} failed: {s:?}", q.qid)),
            }
        }
        if got > 0 {
            q.ring_cq(e);
            last = Instant::now();
        } else if last.elapsed() > Duration::from_secs(10) {
            r.faults
                .push(format!("queue {}: {} appends lost", q.qid, inflight.len()));
        } else {
            std::thread::yield_now();
        }
        pause.maybe();
    }
    (landed, r)
}

/// Runs `plan` on a fresh engine.
pub fn run(plan: &Plan) -> Report {
    match run_checked(plan) {
        Ok(r) => r,
        Err(e) => Report {
            faults: vec![format!("setup: {e}")],
            ..Report::default()
        },
    }
}

fn run_checked(plan: &Plan) -> Result<Report, String> {
    let e = engine(plan)?;
    e.start().map_err(|x| x.to_string())?;
    let per = plan.qd as usize * 4096 + 1024 * 80;
    let zone_bytes = (ZONE_LBAS * LBA) as usize;
    let mut host = MockHost::new(
        &e,
        usize::from(plan.queues + 1) * per + zone_bytes + 0x10000,
    )
    .map_err(|x| x.to_string())?;
    let mut queues = Vec::new();
    for k in 0..plan.queues {
        let q = host
            .create_queue_pair(&e, k + 1, 256, k + 1, false)
            .map_err(|x| x.to_string())?;
        queues.push((q, host.alloc(plan.qd as usize * 4096)));
    }
    let back = host.alloc(zone_bytes);
    let mut reader = host
        .create_queue_pair(&e, plan.queues + 1, 16, 0, false)
        .map_err(|x| x.to_string())?;
    let mem = &host.mem;
    let results: Vec<(Vec<Landed>, Report)> = std::thread::scope(|s| {
        let hs: Vec<_> = queues
            .iter_mut()
            .enumerate()
            .map(|(k, (q, bufs))| {
                let seed = plan.seed.wrapping_mul(31).wrapping_add(k as u64);
                let e = &e;
                s.spawn(move || drive(e, q, mem, *bufs, plan, seed))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut report = Report::default();
    let mut landed = Vec::new();
    for (l, r) in results {
        report.completed += r.completed;
        report.injected += r.injected;
        report.faults.extend(r.faults);
        landed.extend(l);
    }
    if !report.faults.is_empty() {
        return Ok(report);
    }
    // Disjoint, gapless from the zone start to the write pointer.
    landed.sort_by_key(|l| l.alba);
    let zslba = ZONE * ZONE_LBAS;
    let mut at = zslba;
    for l in &landed {
        if l.alba != at {
            report.faults.push(format!(
                "append {}/{} at LBA {} but the zone's blocks run on from {at}: a gap or an overlap",
                l.qid, l.seq, l.alba
            ));
            return Ok(report);
        }
        at += l.nlb;
    }
    report.blocks = at - zslba;
    let wp = e.zone_report(1).map(|z| z[ZONE as usize].2);
    let want_wp = if at == zslba + ZONE_LBAS {
        u64::MAX
    } else {
        at
    };
    if wp != Some(want_wp) {
        report.faults.push(format!(
            "write pointer {wp:?}, but the successful appends end at {at}: a failed append consumed blocks"
        ));
    }
    // Read the zone back; each block carries its append's tag.
    let nblocks = at - zslba;
    let mut done = 0u64;
    while done < nblocks {
        let n = (nblocks - done).min(8);
        let mut s = Sqe::new(op::READ, 0, 1);
        s.set_prps(back, back + 4096);
        s.set_lba_range(zslba + done, n as u32);
        reader.push(&s);
        reader.ring_sq(&e);
        let c = reader
            .wait(Duration::from_secs(5))
            .ok_or("read-back lost")?;
        reader.ring_cq(&e);
        if c.status() != Status::SUCCESS {
            return Err(format!("read-back failed: {:?}", c.status()));
        }
        let mut data = vec![0u8; (n * LBA) as usize];
        host.mem.read(back, &mut data);
        for b in 0..n {
            let lba = zslba + done + b;
            let i = landed.partition_point(|l| l.alba + l.nlb <= lba);
            let l = &landed[i];
            let want = tag(l.qid, l.seq, lba - l.alba);
            let off = (b * LBA) as usize;
            let have = u64::from_le_bytes(data[off..off + 8].try_into().unwrap_or_default());
            if have != want {
                report.faults.push(format!(
                    "LBA {lba}: tag {have:#x}, but append {}/{} was assigned it ({want:#x})",
                    l.qid, l.seq
                ));
                return Ok(report);
            }
        }
        done += n;
    }
    e.stop();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_from_many_queues_to_one_zone_land_exactly_once() {
        let mut runs = 0;
        for polling in [Polling::Adaptive, Polling::Interrupt, Polling::Poll] {
            for (iothreads, queues) in [(1u16, 2u16), (2, 4)] {
                for (qd, faults, pause) in [
                    (1u32, false, 0u32),
                    (16, false, 20),
                    (16, true, 0),
                    (8, true, 20),
                ] {
                    let plan = Plan {
                        polling,
                        iothreads,
                        queues,
                        qd,
                        appends: 300,
                        faults,
                        pause_per_mille: pause,
                        seed: u64::from(qd) * 7 + u64::from(queues) + u64::from(pause),
                    };
                    let r = run(&plan);
                    assert!(r.faults.is_empty(), "{plan:?}: {:?}", r.faults);
                    assert_eq!(r.completed, u64::from(queues) * 300, "{plan:?}");
                    assert!(!faults || r.injected > 0, "{plan:?}: no rule fired");
                    assert!(r.blocks > 0);
                    runs += 1;
                }
            }
        }
        eprintln!("{runs} runs of concurrent zone appends, each exactly once");
    }
}
