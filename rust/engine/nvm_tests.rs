//! The NVM command set through the driver mock: Write Zeroes, Dataset
//! Management, Compare, Verify, Copy, SGL transfers, Abort, Format.

use super::*;
use crate::driver::{HostQueue, MockHost};
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::time::{Duration, Instant};

/// A 1 MiB RAM namespace, two vectors, one I/O queue pair: the engine the
/// command-set and remote-memory tests share.
pub(super) fn engine() -> Engine {
    engine_with(NamespaceSpec {
        size_bytes: 1 << 20,
        lba_size: 512,
        backend: "ram".into(),
        ..NamespaceSpec::default()
    })
}

/// The same engine with namespace `ns`.
pub(super) fn engine_with(ns: NamespaceSpec) -> Engine {
    Engine::new(EngineConfig {
        namespaces: vec![ns],
        msix_vectors: 2,
        max_qid: 1,
        max_queue_entries: 64,
        mdts_bytes: 0,
        poll_us: 50,
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

fn run(e: &Engine, q: &mut HostQueue, s: Sqe) -> Cqe {
    q.push(&s);
    q.ring_sq(e);
    let c = q.wait(Duration::from_secs(5)).expect("no completion");
    q.ring_cq(e);
    c
}

fn cmd(opcode: u8, cid: u16, slba: u64, nlb: u32, prp1: u64) -> Sqe {
    let mut s = Sqe::new(opcode, cid, 1);
    s.set_prps(prp1, 0);
    s.set_lba_range(slba, nlb);
    s
}

fn sgl_data_block(s: &mut Sqe, addr: u64, len: u32) {
    s.dw[0] |= 1 << 14; // PSDT 01b: SGL
    s.dw[6] = addr as u32;
    s.dw[7] = (addr >> 32) as u32;
    s.dw[8] = len;
    s.dw[9] = 0; // type 0h (data block), subtype 0h in byte 15
}

#[test]
fn zeroes_dsm_compare_verify_copy() {
    let e = engine();
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(8192);
    let pattern: Vec<u8> = (0..4096).map(|i| (i % 251) as u8 + 1).collect();
    h.mem.write(buf, &pattern);
    assert!(run(&e, &mut q, cmd(op::WRITE, 1, 0, 8, buf))
        .status()
        .is_success());
    // Compare: equal, then one byte off.
    assert!(run(&e, &mut q, cmd(op::COMPARE, 2, 0, 8, buf))
        .status()
        .is_success());
    h.mem.write(buf + 100, &[0]);
    assert_eq!(
        run(&e, &mut q, cmd(op::COMPARE, 3, 0, 8, buf)).status(),
        Status::COMPARE_FAILURE.dnr()
    );
    h.mem.write(buf + 100, &pattern[100..101]);
    // Copy LBAs 0-7 to 100-107, then compare there.
    let ranges = h.alloc(4096);
    let mut entry = [0u8; 32];
    entry[8..16].copy_from_slice(&0u64.to_le_bytes());
    entry[16..18].copy_from_slice(&7u16.to_le_bytes());
    h.mem.write(ranges, &entry);
    let mut copy = cmd(op::COPY, 4, 100, 1, ranges);
    copy.dw[12] = 0; // NR 0: one range, format 0
    assert!(run(&e, &mut q, copy).status().is_success());
    assert!(run(&e, &mut q, cmd(op::COMPARE, 5, 100, 8, buf))
        .status()
        .is_success());
    // Copy limits: a range longer than MSSRL.
    entry[16..18].copy_from_slice(&(crate::cmd::nvm::MSSRL as u16).to_le_bytes());
    h.mem.write(ranges, &entry);
    assert_eq!(
        run(&e, &mut q, copy).status(),
        Status::COMMAND_SIZE_LIMIT_EXCEEDED.dnr()
    );
    // Write Zeroes on LBAs 2-3, DSM deallocate of 4-5: they read as zeroes.
    assert!(run(&e, &mut q, cmd(op::WRITE_ZEROES, 6, 2, 2, 0))
        .status()
        .is_success());
    let mut dsm_range = [0u8; 16];
    dsm_range[4..8].copy_from_slice(&2u32.to_le_bytes());
    dsm_range[8..16].copy_from_slice(&4u64.to_le_bytes());
    h.mem.write(ranges, &dsm_range);
    let mut dsm = cmd(op::DATASET_MANAGEMENT, 7, 0, 1, ranges);
    dsm.dw[10] = 0;
    dsm.dw[11] = 1 << 2;
    dsm.dw[12] = 0;
    assert!(run(&e, &mut q, dsm).status().is_success());
    let out = buf + 4096;
    assert!(run(&e, &mut q, cmd(op::READ, 8, 0, 8, out))
        .status()
        .is_success());
    let mut back = vec![0u8; 4096];
    h.mem.read(out, &mut back);
    assert_eq!(&back[..1024], &pattern[..1024]);
    assert!(
        back[1024..3072].iter().all(|&b| b == 0),
        "zeroed and deallocated LBAs read 0"
    );
    assert_eq!(&back[3072..], &pattern[3072..]);
    // Verify: in range fine, past the end not.
    assert!(run(&e, &mut q, cmd(op::VERIFY, 9, 0, 8, 0))
        .status()
        .is_success());
    assert_eq!(
        run(&e, &mut q, cmd(op::VERIFY, 10, 2047, 2, 0)).status(),
        Status::LBA_OUT_OF_RANGE.dnr()
    );
    // An SGL read of the same data.
    let mut r = cmd(op::READ, 11, 100, 8, 0);
    sgl_data_block(&mut r, out, 4096);
    assert!(run(&e, &mut q, r).status().is_success());
    h.mem.read(out, &mut back);
    assert_eq!(back, pattern);
}

#[test]
fn abort_a_queued_command_and_format() {
    let e = engine();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    // Queue two commands with the worker stopped, abort the second.
    q.push(&cmd(op::WRITE, 1, 0, 1, buf));
    q.push(&cmd(op::WRITE, 2, 1, 1, buf));
    q.ring_sq(&e);
    assert!(e.abort_command(1, 2));
    assert!(e.abort_command(1, 2), "a second Abort of it still finds it");
    assert!(!e.abort_command(1, 9), "nothing queued with CID 9");
    e.start().unwrap();
    let t = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Some(c) = q.pop() {
            seen.push((c.cid, c.status()));
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    q.ring_cq(&e);
    assert_eq!(
        seen,
        vec![(1, Status::SUCCESS), (2, Status::ABORT_REQUESTED)]
    );
    // CID 2 used again: the doubled Abort ended with the command it named.
    assert_eq!(
        run(&e, &mut q, cmd(op::WRITE, 2, 1, 1, buf)).status(),
        Status::SUCCESS
    );
    // Format to 4096-byte LBAs: 256 LBAs, all zero.
    e.format_namespace(1, 4096).unwrap();
    assert_eq!(e.namespace_lba_size(1), Some(4096));
    assert_eq!(
        run(&e, &mut q, cmd(op::READ, 3, 255, 1, buf)).status(),
        Status::SUCCESS
    );
    assert_eq!(
        run(&e, &mut q, cmd(op::READ, 4, 256, 1, buf)).status(),
        Status::LBA_OUT_OF_RANGE.dnr()
    );
    let mut back = vec![1u8; 4096];
    h.mem.read(buf, &mut back);
    assert!(back.iter().all(|&b| b == 0));
    assert!(e.format_namespace(2, 512).is_err());
    assert!(e.format_namespace(1, 1024).is_err());
}
