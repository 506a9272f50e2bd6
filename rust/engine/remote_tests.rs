//! Remote guest memory through the driver mock: the mock's memfd is added
//! as a remote region, and the transport reaches it through a second
//! mapping of the same memfd, so the host side runs unchanged while every
//! device access is a transport call.

use super::*;
use crate::driver::{HostMemory, HostQueue, MockHost};
use crate::mem::DmaTransport;
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::time::Duration;

const MEM: usize = 1 << 20;

/// The client end: its view of the memfd, a log of (is_write, iova, len)
/// and an IOVA range whose accesses fail.
struct Client {
    mem: HostMemory,
    log: Mutex<Vec<(bool, u64, usize)>>,
    poison: Mutex<Option<(u64, u64)>>,
}

impl Client {
    fn check(&self, iova: u64, len: usize) -> Result<(), String> {
        match *lock(&self.poison) {
            Some((a, b)) if iova < b && a < iova + len as u64 => Err("poisoned".into()),
            _ => Ok(()),
        }
    }
}

impl DmaTransport for Client {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String> {
        lock(&self.log).push((false, iova, buf.len()));
        self.check(iova, buf.len())?;
        self.mem.read(iova, buf);
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String> {
        lock(&self.log).push((true, iova, data.len()));
        self.check(iova, data.len())?;
        self.mem.write(iova, data);
        Ok(())
    }
}

use super::nvm_tests::engine;

/// An engine whose only guest memory is the mock's, made remote.
fn remote_host() -> (Engine, MockHost, Arc<Client>) {
    let e = engine();
    let h = MockHost::new(&e, MEM).unwrap();
    e.unmap_dma(MockHost::IOVA, MEM as u64).unwrap();
    e.map_dma_remote(MockHost::IOVA, MEM as u64, true).unwrap();
    let c = Arc::new(Client {
        mem: HostMemory::from_fd(h.mem.fd(), MEM, MockHost::IOVA).unwrap(),
        log: Mutex::new(Vec::new()),
        poison: Mutex::new(None),
    });
    e.set_dma_transport(Some(c.clone()));
    (e, h, c)
}

fn run(e: &Engine, q: &mut HostQueue, s: Sqe) -> Cqe {
    q.push(&s);
    q.ring_sq(e);
    let c = q.wait(Duration::from_secs(5)).expect("no completion");
    q.ring_cq(e);
    c
}

fn rw(opcode: u8, cid: u16, slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
    let mut s = Sqe::new(opcode, cid, 1);
    s.set_prps(prp1, prp2);
    s.set_lba_range(slba, nlb);
    s
}

#[test]
fn io_through_the_transport_with_prp_lists() {
    let (e, mut h, c) = remote_host();
    assert_eq!(e.dma_regions(), vec![(MockHost::IOVA, MEM as u64, true)]);
    e.start().unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    // Three data pages, the last one apart from the first two, via a list.
    let data = h.alloc(4 * 4096);
    let list = h.alloc(4096);
    let pages = [data, data + 4096, data + 3 * 4096];
    for (i, p) in pages[1..].iter().enumerate() {
        h.mem.write(list + i as u64 * 8, &p.to_le_bytes());
    }
    let pattern: Vec<u8> = (0..3 * 4096u32).map(|i| (i * 7 % 253) as u8).collect();
    for (i, p) in pages.iter().enumerate() {
        h.mem.write(*p, &pattern[i * 4096..(i + 1) * 4096]);
    }
    lock(&c.log).clear();
    let w = run(&e, &mut q, rw(op::WRITE, 1, 8, 24, data, list));
    assert_eq!(w.status(), Status::SUCCESS);
    {
        let log = lock(&c.log);
        // SQE, list entries, the two runs of data, then the CQE in two
        // writes: DW0-1 before DW2-3 (the phase).
        assert_eq!(log[0], (false, q.sq_iova, 64));
        assert!(
            log.contains(&(false, data, 2 * 4096)),
            "contiguous pages are one message: {log:?}"
        );
        assert!(log.contains(&(false, data + 3 * 4096, 4096)));
        let n = log.len();
        assert_eq!(
            &log[n - 2..],
            &[(true, q.cq_iova, 8), (true, q.cq_iova + 8, 8)]
        );
    }
    // Read it back into other pages. With PRP2 0 the list is at IOVA 0,
    // unmapped: the walk fails before any data moves.
    let out = h.alloc(3 * 4096);
    let r = run(&e, &mut q, rw(op::READ, 2, 8, 24, out, 0));
    assert_eq!(r.status(), Status::DATA_TRANSFER_ERROR.dnr());
    let list2 = h.alloc(4096);
    h.mem.write(list2, &(out + 4096).to_le_bytes());
    h.mem.write(list2 + 8, &(out + 2 * 4096).to_le_bytes());
    let r = run(&e, &mut q, rw(op::READ, 3, 8, 24, out, list2));
    assert_eq!(r.status(), Status::SUCCESS);
    let mut back = vec![0u8; 3 * 4096];
    h.mem.read(out, &mut back);
    assert_eq!(back, pattern);
    // Compare through the transport: equal, then different.
    assert_eq!(
        run(&e, &mut q, rw(op::COMPARE, 4, 8, 24, out, list2)).status(),
        Status::SUCCESS
    );
    h.mem.write(out + 5000, &[0xee]);
    assert_eq!(
        run(&e, &mut q, rw(op::COMPARE, 5, 8, 24, out, list2)).status(),
        Status::COMPARE_FAILURE.dnr()
    );
    assert!(!e.fatal());
}

#[test]
fn a_failing_transport_fails_the_command_not_the_controller() {
    let (e, mut h, c) = remote_host();
    e.start().unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(2 * 4096);
    h.mem.write(buf, &[0x5a; 4096]);
    assert_eq!(
        run(&e, &mut q, rw(op::WRITE, 1, 0, 8, buf, 0)).status(),
        Status::SUCCESS
    );
    *lock(&c.poison) = Some((buf, buf + 4096));
    for (cid, opcode) in [(2, op::READ), (3, op::WRITE), (4, op::COMPARE)] {
        let s = run(&e, &mut q, rw(opcode, cid, 0, 8, buf, 0));
        assert_eq!(
            s.status(),
            Status::DATA_TRANSFER_ERROR.dnr(),
            "opcode {opcode:#x}"
        );
    }
    // The failed Write left the namespace alone; the controller goes on.
    *lock(&c.poison) = None;
    let r = run(&e, &mut q, rw(op::READ, 5, 0, 8, buf + 4096, 0));
    assert_eq!(r.status(), Status::SUCCESS);
    let mut back = vec![0u8; 4096];
    h.mem.read(buf + 4096, &mut back);
    assert!(back.iter().all(|&b| b == 0x5a));
    assert!(!e.fatal());
    let errors = e.take_errors();
    assert_eq!(errors.len(), 3);
}

#[test]
fn mixed_memory_admin_copies_and_no_shadow_doorbells() {
    let (e, mut h, _c) = remote_host();
    // An fd-backed region beside the remote one.
    let fd_mem = HostMemory::new(0x4000, 0x1000_0000).unwrap();
    e.map_dma(0x1000_0000, 0x4000, fd_mem.fd(), 0, true)
        .unwrap();
    e.start().unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    fd_mem.write(0x1000_0000, &[0x33; 4096]);
    // fd-backed source, remote destination.
    assert_eq!(
        run(&e, &mut q, rw(op::WRITE, 1, 0, 8, 0x1000_0000, 0)).status(),
        Status::SUCCESS
    );
    let out = h.alloc(4096);
    assert_eq!(
        run(&e, &mut q, rw(op::READ, 2, 0, 8, out, 0)).status(),
        Status::SUCCESS
    );
    let mut back = vec![0u8; 4096];
    h.mem.read(out, &mut back);
    assert!(back.iter().all(|&b| b == 0x33));
    // One command whose pages are remote (PRP1) and fd-backed (PRP2).
    fd_mem.write(0x1000_1000, &[0x44; 4096]);
    assert_eq!(
        run(&e, &mut q, rw(op::WRITE, 3, 8, 16, out, 0x1000_1000)).status(),
        Status::SUCCESS
    );
    let r = run(&e, &mut q, rw(op::READ, 4, 8, 16, 0x1000_2000, out));
    assert_eq!(r.status(), Status::SUCCESS);
    let mut two = vec![0u8; 4096];
    fd_mem.read(0x1000_2000, &mut two);
    h.mem.read(out, &mut back);
    assert!(two.iter().all(|&b| b == 0x33) && back.iter().all(|&b| b == 0x44));
    // Admin data copies through PRPs reach remote memory too.
    let admin_buf = h.alloc(8192);
    let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    e.set_page_size(4096).unwrap();
    assert_eq!(
        e.write_prp(admin_buf + 512, admin_buf + 4096, &data),
        Status::SUCCESS
    );
    assert_eq!(
        e.read_prp(admin_buf + 512, admin_buf + 4096, 6000),
        (Status::SUCCESS, data)
    );
    // Shadow doorbells are atomics in shared memory: remote memory is refused.
    let shadow = h.alloc(8192);
    assert_eq!(
        e.set_shadow_doorbells(shadow, shadow + 4096),
        Status::DATA_TRANSFER_ERROR.dnr()
    );
    assert_eq!(e.shadow_doorbells(), None);
    // Unmapping the remote region: the next command cannot reach its SQ.
    e.unmap_dma(MockHost::IOVA, MEM as u64).unwrap();
    assert_eq!(e.dma_regions(), vec![(0x1000_0000, 0x4000, true)]);
}
