//! Zoned namespaces through the engine and the driver mock, checked
//! against the ZNS 1.1 text (section numbers in each test), not the code.

use std::time::Duration;

use crate::driver::{HostQueue, MockHost};
use crate::engine::{Engine, EngineConfig, NamespaceSpec, Polling};
use crate::spec::opcode::io as op;
use crate::spec::{Cqe, Sqe, Status};
use crate::zns::mgmt::zsa;
use crate::zns::{za, ZoneSpec};

/// 512-byte LBAs; zones of 128 LBAs (64 KiB), 96 writable.
pub(super) const ZONE: u64 = 128;
pub(super) const CAP: u64 = 96;
const BUF: usize = 1 << 20;

/// The ZS values (Figure 37).
const EMPTY: u8 = 0x1;
const IOPEN: u8 = 0x2;
const EOPEN: u8 = 0x3;
const CLOSED: u8 = 0x4;
const RDONLY: u8 = 0xd;
const FULL: u8 = 0xe;
const OFFLINE: u8 = 0xf;

/// Namespace 1: zoned, 16 zones, MOR 2 / MAR 3 (counts), 64-byte
/// extensions, ZASL 8 KiB. 2: conventional. 3: zoned, 4 zones of 512
/// LBAs, Read Across Zone Boundaries, no limits.
pub(super) fn spec() -> Vec<NamespaceSpec> {
    vec![
        NamespaceSpec {
            size_bytes: 1 << 20,
            lba_size: 512,
            backend: "ram".into(),
            zones: Some(ZoneSpec {
                size_bytes: ZONE * 512,
                capacity_bytes: CAP * 512,
                max_open: 2,
                max_active: 3,
                append_size_limit: 8192,
                descriptor_extension_bytes: 64,
                cross_read: false,
            }),
            ..NamespaceSpec::default()
        },
        NamespaceSpec {
            size_bytes: 1 << 20,
            lba_size: 512,
            backend: "ram".into(),
            ..NamespaceSpec::default()
        },
        NamespaceSpec {
            size_bytes: 1 << 20,
            lba_size: 512,
            backend: "ram".into(),
            zones: Some(ZoneSpec {
                size_bytes: 512 * 512,
                cross_read: true,
                ..ZoneSpec::default()
            }),
            ..NamespaceSpec::default()
        },
    ]
}

pub(super) struct Rig {
    pub e: Engine,
    pub q: HostQueue,
    pub h: MockHost,
    pub buf: u64,
    cid: u16,
}

impl Rig {
    pub fn new(namespaces: Vec<NamespaceSpec>) -> Rig {
        let e = Engine::new(EngineConfig {
            namespaces,
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
        .unwrap();
        e.start().unwrap();
        let mut h = MockHost::new(&e, 2 * BUF).unwrap();
        let q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
        let buf = h.alloc(BUF);
        Rig {
            e,
            q,
            h,
            buf,
            cid: 0,
        }
    }

    pub fn run(&mut self, mut s: Sqe) -> Cqe {
        self.cid = self.cid.wrapping_add(1);
        s.set_cid(self.cid);
        self.q.push(&s);
        self.q.ring_sq(&self.e);
        let c = self.q.wait(Duration::from_secs(5)).expect("no completion");
        self.q.ring_cq(&self.e);
        assert_eq!(c.cid, self.cid);
        c
    }

    /// An SQE whose data is `len` bytes at the buffer (one SGL data block).
    fn sqe(&self, opcode: u8, nsid: u32, len: u32) -> Sqe {
        let mut s = Sqe::new(opcode, 0, nsid);
        s.dw[0] |= 1 << 14;
        s.dw[6] = self.buf as u32;
        s.dw[7] = (self.buf >> 32) as u32;
        s.dw[8] = len;
        s
    }

    pub fn write(&mut self, nsid: u32, slba: u64, nlb: u32, byte: u8) -> Cqe {
        self.h.mem.write(self.buf, &vec![byte; nlb as usize * 512]);
        let mut s = self.sqe(op::WRITE, nsid, nlb * 512);
        s.set_lba_range(slba, nlb);
        self.run(s)
    }

    pub fn append(&mut self, nsid: u32, zslba: u64, nlb: u32, byte: u8) -> Cqe {
        self.h.mem.write(self.buf, &vec![byte; nlb as usize * 512]);
        let mut s = self.sqe(op::ZONE_APPEND, nsid, nlb * 512);
        s.set_lba_range(zslba, nlb);
        self.run(s)
    }

    pub fn read(&mut self, nsid: u32, slba: u64, nlb: u32) -> (Status, Vec<u8>) {
        // A pattern first, so a read that leaves bytes alone shows.
        self.h.mem.write(self.buf, &vec![0x5a; nlb as usize * 512]);
        let mut s = self.sqe(op::READ, nsid, nlb * 512);
        s.set_lba_range(slba, nlb);
        let c = self.run(s);
        let mut out = vec![0u8; nlb as usize * 512];
        self.h.mem.read(self.buf, &mut out);
        (c.status(), out)
    }

    pub fn zms(&mut self, nsid: u32, slba: u64, action: u32, all: bool) -> Status {
        let mut s = self.sqe(op::ZONE_MGMT_SEND, nsid, 64);
        s.set_lba_range(slba, 1);
        s.dw[12] = 0;
        s.dw[13] = action | if all { 1 << 8 } else { 0 };
        self.run(s).status()
    }

    /// Zone Management Receive into `len` bytes (the rest of the buffer
    /// keeps 0xEE, to show nothing past them was written).
    pub fn report(
        &mut self,
        nsid: u32,
        slba: u64,
        extended: bool,
        zrasf: u32,
        partial: bool,
        len: u32,
    ) -> (Status, Vec<u8>) {
        self.h.mem.write(self.buf, &vec![0xee; len as usize + 64]);
        let mut s = self.sqe(op::ZONE_MGMT_RECV, nsid, len);
        s.dw[10] = slba as u32;
        s.dw[11] = (slba >> 32) as u32;
        s.dw[12] = len / 4 - 1;
        s.dw[13] = u32::from(extended) | (zrasf << 8) | (u32::from(partial) << 16);
        let c = self.run(s);
        let mut out = vec![0u8; len as usize + 64];
        self.h.mem.read(self.buf, &mut out);
        (c.status(), out)
    }

    /// (state, write pointer as reported) of zone `z` of `nsid`.
    pub fn zone(&self, nsid: u32, z: u64) -> (u8, u64) {
        let r = self.e.zone_report(nsid).unwrap()[z as usize];
        (r.3, r.2)
    }
}

fn dnr(s: Status) -> Status {
    s.dnr()
}

#[test]
fn writes_follow_the_write_pointer_to_full() {
    // 2.1.1.2.1.1: writes at the write pointer only, Zone Invalid Write
    // elsewhere, Zone Boundary Error past ZCAP, Zone Is Full once full;
    // 2.1.1.3.1: Empty -> Implicitly Opened on a write; -> Full at ZCAP.
    let mut r = Rig::new(spec());
    assert_eq!(r.zone(1, 0), (EMPTY, 0));
    assert_eq!(r.write(1, 0, 8, 1).status(), Status::SUCCESS);
    assert_eq!(r.zone(1, 0), (IOPEN, 8));
    assert_eq!(
        r.write(1, 4, 4, 2).status(),
        dnr(Status::ZONE_INVALID_WRITE)
    );
    assert_eq!(
        r.write(1, 16, 4, 2).status(),
        dnr(Status::ZONE_INVALID_WRITE)
    );
    assert_eq!(
        r.write(1, 8, 89, 2).status(),
        dnr(Status::ZONE_BOUNDARY_ERROR)
    );
    assert_eq!(r.zone(1, 0), (IOPEN, 8), "refused writes move nothing");
    let c = r.write(1, 8, 88, 3);
    assert_eq!(
        (c.status(), c.dw0, c.dw1),
        (Status::SUCCESS, 0, 0),
        "a Write returns no LBA"
    );
    assert_eq!(
        r.zone(1, 0),
        (FULL, u64::MAX),
        "Full: the write pointer is invalid"
    );
    assert_eq!(r.write(1, 96, 1, 4).status(), dnr(Status::ZONE_IS_FULL));
    // The ZCAP..ZSZE gap of a zone reads as zeroes; the data below it as written.
    let (s, data) = r.read(1, 90, 16);
    assert_eq!(s, Status::SUCCESS);
    assert!(data[..6 * 512].iter().all(|&b| b == 3));
    assert!(data[6 * 512..].iter().all(|&b| b == 0));
    // A write past the namespace is LBA Out of Range, not a zone status.
    assert_eq!(
        r.write(1, 16 * ZONE - 1, 2, 0).status(),
        dnr(Status::LBA_OUT_OF_RANGE)
    );
}

#[test]
fn reads_above_the_write_pointer_are_zeroes_whatever_the_backend_holds() {
    // 2.1.1.5: every block of an Empty zone is deallocated; DLFEAT 001b.
    let mut r = Rig::new(spec());
    assert_eq!(r.write(1, ZONE, 16, 7).status(), Status::SUCCESS);
    let (s, data) = r.read(1, ZONE, 32);
    assert_eq!(s, Status::SUCCESS);
    assert!(data[..16 * 512].iter().all(|&b| b == 7));
    assert!(
        data[16 * 512..].iter().all(|&b| b == 0),
        "above the write pointer"
    );
    assert_eq!(r.zms(1, ZONE, zsa::RESET, false), Status::SUCCESS);
    let (_, data) = r.read(1, ZONE, 32);
    assert!(data.iter().all(|&b| b == 0), "a reset zone reads as zeroes");
    // A zone written, then finished: blocks between the write pointer and
    // ZCAP were never written and read as zeroes.
    assert_eq!(r.write(1, ZONE, 4, 9).status(), Status::SUCCESS);
    assert_eq!(r.zms(1, ZONE, zsa::FINISH, false), Status::SUCCESS);
    let (_, data) = r.read(1, ZONE, 8);
    assert!(data[..4 * 512].iter().all(|&b| b == 9));
    assert!(data[4 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn reads_across_zones_need_razb_and_offline_zones_refuse_reads() {
    // 2.1.1.2.1.2 and OZCS bit 0.
    let mut r = Rig::new(spec());
    assert_eq!(r.read(1, ZONE - 1, 2).0, dnr(Status::ZONE_BOUNDARY_ERROR));
    assert_eq!(
        r.write(3, 510, 2, 1).status(),
        dnr(Status::ZONE_INVALID_WRITE)
    );
    assert_eq!(r.write(3, 0, 2, 1).status(), Status::SUCCESS);
    assert_eq!(r.write(3, 512, 2, 2).status(), Status::SUCCESS);
    let (s, data) = r.read(3, 1, 513);
    assert_eq!(s, Status::SUCCESS, "namespace 3 reads across zones");
    assert!(data[..512].iter().all(|&b| b == 1));
    assert!(data[512..511 * 512].iter().all(|&b| b == 0));
    assert!(data[511 * 512..].iter().all(|&b| b == 2));
    assert!(r
        .e
        .zone_action(1, 2, crate::zns::ZoneAction::Offline)
        .unwrap());
    assert_eq!(r.read(1, 2 * ZONE, 1).0, dnr(Status::ZONE_IS_OFFLINE));
    assert_eq!(
        r.write(1, 2 * ZONE, 1, 0).status(),
        dnr(Status::ZONE_IS_OFFLINE)
    );
    // Verify checks the zones like a read.
    let mut v = Sqe::new(op::VERIFY, 0, 1);
    v.set_lba_range(2 * ZONE, 1);
    assert_eq!(r.run(v).status(), dnr(Status::ZONE_IS_OFFLINE));
}

#[test]
fn zone_append_returns_the_lba_it_wrote() {
    // 3.4.1: SLBA must be a zone's lowest LBA (Invalid Field otherwise);
    // ALBA in DW0/DW1; ZASL bounds the size.
    let mut r = Rig::new(spec());
    let z = 5 * ZONE;
    let c = r.append(1, z, 4, 0xa1);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(u64::from(c.dw0) | (u64::from(c.dw1) << 32), z);
    let c = r.append(1, z, 16, 0xa2);
    assert_eq!(u64::from(c.dw0) | (u64::from(c.dw1) << 32), z + 4);
    let (_, data) = r.read(1, z, 20);
    assert!(data[..4 * 512].iter().all(|&b| b == 0xa1));
    assert!(data[4 * 512..].iter().all(|&b| b == 0xa2));
    assert_eq!(
        r.append(1, z + 1, 1, 0).status(),
        dnr(Status::INVALID_FIELD)
    );
    assert_eq!(
        r.append(1, z, 17, 0).status(),
        dnr(Status::INVALID_FIELD),
        "over ZASL (8 KiB)"
    );
    assert_eq!(
        r.append(2, 0, 1, 0).status(),
        dnr(Status::INVALID_OPCODE),
        "conventional"
    );
    // Fill the zone: the append that does not fit is a boundary error.
    for _ in 0..4 {
        assert_eq!(r.append(1, z, 16, 3).status(), Status::SUCCESS);
    }
    assert_eq!(
        r.append(1, z, 16, 3).status(),
        dnr(Status::ZONE_BOUNDARY_ERROR)
    );
    assert_eq!(r.append(1, z, 12, 3).status(), Status::SUCCESS);
    assert_eq!(r.zone(1, 5).0, FULL);
    assert_eq!(r.append(1, z, 1, 3).status(), dnr(Status::ZONE_IS_FULL));
}

#[test]
fn open_and_active_resources_limit_zones() {
    // 2.1.1.4: MOR 2 / MAR 3 (counts). An implicitly opened zone is closed
    // to make room; explicitly opened ones never are; MAR > MOR, so the
    // missing resource names the status.
    let mut r = Rig::new(spec());
    for z in 0..2 {
        assert_eq!(r.write(1, z * ZONE, 1, 1).status(), Status::SUCCESS);
    }
    assert_eq!(r.write(1, 2 * ZONE, 1, 1).status(), Status::SUCCESS);
    assert_eq!(
        r.zone(1, 0).0,
        CLOSED,
        "the oldest implicitly opened zone closed"
    );
    assert_eq!((r.zone(1, 1).0, r.zone(1, 2).0), (IOPEN, IOPEN));
    assert_eq!(r.e.zone_resources(1), Some((2, 3)));
    assert_eq!(
        r.write(1, 3 * ZONE, 1, 1).status(),
        dnr(Status::TOO_MANY_ACTIVE_ZONES)
    );
    assert_eq!(
        r.zms(1, 3 * ZONE, zsa::OPEN, false),
        dnr(Status::TOO_MANY_ACTIVE_ZONES)
    );
    // Open 1 and 2 explicitly: no implicitly opened zone is left to close.
    assert_eq!(r.zms(1, ZONE, zsa::OPEN, false), Status::SUCCESS);
    assert_eq!(r.zms(1, 2 * ZONE, zsa::OPEN, false), Status::SUCCESS);
    assert_eq!(
        r.write(1, 1, 1, 1).status(),
        dnr(Status::TOO_MANY_OPEN_ZONES)
    );
    assert_eq!(
        r.zms(1, 0, zsa::OPEN, false),
        dnr(Status::TOO_MANY_OPEN_ZONES)
    );
    assert_eq!(r.zone(1, 0).0, CLOSED, "a refused open changes nothing");
    // Open with Select All: the one Closed zone needs a resource there is not.
    assert_eq!(
        r.zms(1, 0, zsa::OPEN, true),
        dnr(Status::TOO_MANY_OPEN_ZONES)
    );
    assert_eq!(r.zms(1, 0, zsa::CLOSE, true), Status::SUCCESS);
    assert_eq!(r.e.zone_resources(1), Some((0, 3)));
    assert_eq!(r.zms(1, 0, zsa::FINISH, false), Status::SUCCESS);
    assert_eq!(
        r.e.zone_resources(1),
        Some((0, 2)),
        "Closed -> Full frees an active resource"
    );
    assert_eq!(r.zms(1, 0, zsa::OPEN, true), Status::SUCCESS);
    assert_eq!((r.zone(1, 1).0, r.zone(1, 2).0), (EOPEN, EOPEN));
}

#[test]
fn zone_send_actions_move_zones_as_figure_7_says() {
    // 3.4.3.1: each action's allowed states; Invalid Zone State Transition
    // elsewhere; Select All's sets.
    let mut r = Rig::new(spec());
    let bad = dnr(Status::INVALID_ZONE_STATE_TRANSITION);
    assert_eq!(r.zms(1, 0, zsa::CLOSE, false), bad, "close an Empty zone");
    assert_eq!(r.zms(1, 0, zsa::OFFLINE, false), bad);
    assert_eq!(
        r.zms(1, 0, zsa::RESET, false),
        Status::SUCCESS,
        "reset an Empty zone: no change"
    );
    assert_eq!(
        r.zms(1, 0, zsa::FINISH, false),
        Status::SUCCESS,
        "Empty -> Full"
    );
    assert_eq!(r.zone(1, 0).0, FULL);
    assert_eq!(r.e.zone_resources(1), Some((0, 0)));
    assert_eq!(r.zms(1, 0, zsa::OPEN, false), bad, "open a Full zone");
    assert_eq!(
        r.zms(1, 0, zsa::FINISH, false),
        Status::SUCCESS,
        "Full: no change"
    );
    assert_eq!(r.zms(1, 0, zsa::RESET, false), Status::SUCCESS);
    assert_eq!(r.zone(1, 0), (EMPTY, 0));
    assert_eq!(
        r.zms(1, 1, zsa::RESET, false),
        dnr(Status::INVALID_FIELD),
        "not a zone start"
    );
    assert_eq!(
        r.zms(1, 16 * ZONE, zsa::RESET, false),
        dnr(Status::LBA_OUT_OF_RANGE)
    );
    assert_eq!(
        r.zms(1, 0, 0x06, false),
        dnr(Status::INVALID_FIELD),
        "reserved ZSA"
    );
    assert_eq!(
        r.zms(2, 0, zsa::RESET, false),
        dnr(Status::INVALID_OPCODE),
        "conventional"
    );
    // Read Only only the controller makes; Offline Zone takes it further.
    assert!(r
        .e
        .zone_action(1, 4, crate::zns::ZoneAction::ReadOnly)
        .unwrap());
    assert_eq!(r.zone(1, 4).0, RDONLY);
    assert_eq!(
        r.write(1, 4 * ZONE, 1, 0).status(),
        dnr(Status::ZONE_IS_READ_ONLY)
    );
    assert_eq!(r.zms(1, 4 * ZONE, zsa::RESET, false), bad);
    assert_eq!(r.zms(1, 4 * ZONE, zsa::FINISH, false), bad);
    assert_eq!(r.zms(1, 4 * ZONE, zsa::OFFLINE, false), Status::SUCCESS);
    assert_eq!(r.zone(1, 4).0, OFFLINE);
    assert_eq!(
        r.zms(1, 4 * ZONE, zsa::OFFLINE, false),
        Status::SUCCESS,
        "no change"
    );
    // Select All: finish touches opened and closed zones, not Empty ones.
    assert_eq!(r.write(1, 6 * ZONE, 1, 1).status(), Status::SUCCESS);
    assert_eq!(r.zms(1, 7 * ZONE, zsa::OPEN, false), Status::SUCCESS);
    assert_eq!(r.zms(1, 0, zsa::FINISH, true), Status::SUCCESS);
    assert_eq!(
        (r.zone(1, 6).0, r.zone(1, 7).0, r.zone(1, 8).0),
        (FULL, FULL, EMPTY)
    );
    assert_eq!(r.zms(1, 0, zsa::RESET, true), Status::SUCCESS);
    assert_eq!(
        (r.zone(1, 6).0, r.zone(1, 7).0, r.zone(1, 4).0),
        (EMPTY, EMPTY, OFFLINE)
    );
}

#[test]
fn set_zone_descriptor_extension_and_the_extended_report() {
    // 3.4.3.1.6 and 5.3: Empty -> Closed with ZDEV; Select All is Invalid
    // Field; the Extended Report Zones carries the data; Reset drops it.
    let mut r = Rig::new(spec());
    r.h.mem.write(r.buf, &[0x42u8; 64]);
    assert_eq!(r.zms(1, 3 * ZONE, zsa::SET_ZDE, false), Status::SUCCESS);
    assert_eq!(r.zone(1, 3).0, CLOSED);
    assert_eq!(
        r.zms(1, 3 * ZONE, zsa::SET_ZDE, false),
        dnr(Status::INVALID_ZONE_STATE_TRANSITION)
    );
    assert_eq!(r.zms(1, 0, zsa::SET_ZDE, true), dnr(Status::INVALID_FIELD));
    assert_eq!(
        r.zms(3, 0, zsa::SET_ZDE, false),
        dnr(Status::INVALID_FIELD),
        "ZDES 0"
    );
    let (s, rep) = r.report(1, 3 * ZONE, true, 0, true, 64 + 128);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(u64::from_le_bytes(rep[0..8].try_into().unwrap()), 1);
    assert_eq!(rep[64 + 1] >> 4, CLOSED);
    assert_eq!(rep[64 + 2], za::ZDEV);
    assert_eq!(&rep[128..192], &[0x42u8; 64][..]);
    assert_eq!(
        r.report(3, 0, true, 0, false, 4096).0,
        dnr(Status::INVALID_FIELD),
        "ZDES 0"
    );
    assert_eq!(r.zms(1, 3 * ZONE, zsa::RESET, false), Status::SUCCESS);
    let (_, rep) = r.report(1, 3 * ZONE, false, 0, true, 128);
    assert_eq!((rep[64 + 1] >> 4, rep[64 + 2]), (EMPTY, 0));
}

#[test]
fn report_zones_fills_any_buffer_without_overrun() {
    // 3.4.2: descriptors from the zone holding SLBA, filtered; Number of
    // Zones per Partial Report; a buffer of any size filled, never overrun.
    let mut r = Rig::new(spec());
    assert_eq!(r.write(1, 2 * ZONE, 3, 1).status(), Status::SUCCESS);
    assert_eq!(r.zms(1, 5 * ZONE, zsa::FINISH, false), Status::SUCCESS);
    let (s, rep) = r.report(1, ZONE + 7, false, 0, false, 4096);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(
        u64::from_le_bytes(rep[0..8].try_into().unwrap()),
        15,
        "zones 1..16"
    );
    let d = |i: usize| &rep[64 + 64 * i..128 + 64 * i];
    assert_eq!(d(0)[0], 0x2, "Sequential Write Required");
    assert_eq!(u64::from_le_bytes(d(0)[16..24].try_into().unwrap()), ZONE);
    assert_eq!(u64::from_le_bytes(d(0)[8..16].try_into().unwrap()), CAP);
    assert_eq!(
        (
            d(1)[1] >> 4,
            u64::from_le_bytes(d(1)[24..32].try_into().unwrap())
        ),
        (IOPEN, 2 * ZONE + 3)
    );
    assert_eq!(
        u64::from_le_bytes(d(4)[24..32].try_into().unwrap()),
        u64::MAX,
        "Full: no write pointer"
    );
    // Filters: Empty zones from zone 0, partial and not.
    let (_, rep) = r.report(1, 0, false, 1, false, 64 + 2 * 64);
    assert_eq!(
        u64::from_le_bytes(rep[0..8].try_into().unwrap()),
        14,
        "every matching zone"
    );
    let (_, rep) = r.report(1, 0, false, 1, true, 64 + 2 * 64);
    assert_eq!(
        u64::from_le_bytes(rep[0..8].try_into().unwrap()),
        2,
        "those transferred"
    );
    assert!(
        rep[192..].iter().all(|&b| b == 0xee),
        "nothing past the buffer"
    );
    let (_, rep) = r.report(1, 0, false, 5, false, 4096);
    assert_eq!(
        u64::from_le_bytes(rep[0..8].try_into().unwrap()),
        1,
        "one Full zone"
    );
    // A buffer shorter than the header, and one ending inside a descriptor.
    let (s, rep) = r.report(1, 0, false, 0, false, 8);
    assert_eq!(
        (s, u64::from_le_bytes(rep[0..8].try_into().unwrap())),
        (Status::SUCCESS, 16)
    );
    assert!(rep[8..].iter().all(|&b| b == 0xee));
    let (_, rep) = r.report(1, 0, false, 0, true, 64 + 100);
    assert_eq!(u64::from_le_bytes(rep[0..8].try_into().unwrap()), 1);
    assert!(rep[164..].iter().all(|&b| b == 0xee));
    // Bad input: reserved options, Extended on namespace 3, SLBA past the end.
    assert_eq!(
        r.report(1, 0, false, 8, false, 4096).0,
        dnr(Status::INVALID_FIELD)
    );
    assert_eq!(
        r.report(1, 0, false, 9, false, 4096).0,
        dnr(Status::INVALID_FIELD)
    );
    assert_eq!(
        r.report(1, 16 * ZONE, false, 0, false, 4096).0,
        dnr(Status::LBA_OUT_OF_RANGE)
    );
    assert_eq!(
        r.report(2, 0, false, 0, false, 4096).0,
        dnr(Status::INVALID_OPCODE)
    );
}

#[test]
fn write_zeroes_copy_and_compare_keep_the_zone_rules() {
    // 3.3.9, 3.3.2, 3.3.1.
    let mut r = Rig::new(spec());
    let mut wz = Sqe::new(op::WRITE_ZEROES, 0, 1);
    wz.set_lba_range(4, 4);
    assert_eq!(r.run(wz).status(), dnr(Status::ZONE_INVALID_WRITE));
    wz.set_lba_range(0, 4);
    assert_eq!(r.run(wz).status(), Status::SUCCESS);
    assert_eq!(r.zone(1, 0), (IOPEN, 4));
    assert_eq!(r.write(1, 4, 4, 6).status(), Status::SUCCESS);
    // Copy LBAs 4..8 (written) and 8..12 (above the write pointer: zeroes)
    // to zone 1's write pointer.
    let mut ranges = vec![0u8; 64];
    for (i, slba) in [4u64, 8].iter().enumerate() {
        ranges[i * 32 + 8..i * 32 + 16].copy_from_slice(&slba.to_le_bytes());
        ranges[i * 32 + 16..i * 32 + 18].copy_from_slice(&3u16.to_le_bytes());
    }
    r.h.mem.write(r.buf, &ranges);
    let mut copy = r.sqe(op::COPY, 1, 64);
    copy.dw[10] = ZONE as u32;
    copy.dw[12] = 1; // two ranges, format 0
    let c = r.run(copy);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(r.zone(1, 1), (IOPEN, ZONE + 8));
    let (_, data) = r.read(1, ZONE, 8);
    assert!(data[..2048].iter().all(|&b| b == 6));
    assert!(data[2048..].iter().all(|&b| b == 0));
    // Copy to a place that is not the write pointer: Zone Invalid Write,
    // without DNR (as QEMU reports zone errors inside Copy).
    r.h.mem.write(r.buf, &ranges);
    let c = r.run(copy);
    assert_eq!(c.status(), Status::ZONE_INVALID_WRITE);
    // A source range across two zones: Zone Boundary Error.
    ranges[8..16].copy_from_slice(&(ZONE - 2).to_le_bytes());
    r.h.mem.write(r.buf, &ranges);
    copy.dw[10] = (ZONE + 8) as u32;
    assert_eq!(r.run(copy).status(), Status::ZONE_BOUNDARY_ERROR);
    // Compare: written data and synthesized zeroes compare as the namespace holds them.
    r.h.mem.write(r.buf, &[[6u8; 1024], [0u8; 1024]].concat());
    let mut cmp = r.sqe(op::COMPARE, 1, 2048);
    cmp.set_lba_range(ZONE + 2, 4);
    assert_eq!(r.run(cmp).status(), Status::SUCCESS);
    r.h.mem.write(r.buf, &[7u8; 2048]);
    assert_eq!(r.run(cmp).status(), dnr(Status::COMPARE_FAILURE));
}

#[test]
fn controller_changes_join_the_changed_zone_list_once() {
    // 4.1.4.1 and Figure 42: only changes the controller makes by itself;
    // each ZSLBA once; Zone Management Send changes are not listed.
    use crate::zns::ZoneAction;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let mut r = Rig::new(spec());
    let seen = Arc::new(AtomicU32::new(0));
    let s2 = seen.clone();
    r.e.set_zone_event_handler(Some(Arc::new(move |nsid| {
        s2.fetch_add(nsid * 100 + 1, Ordering::SeqCst);
    })));
    assert_eq!(r.zms(1, 0, zsa::FINISH, false), Status::SUCCESS);
    assert_eq!(r.e.take_changed_zones(1, false), Some((vec![], false)));
    assert!(r.e.zone_action(1, 0, ZoneAction::ResetRecommended).unwrap());
    assert!(
        !r.e.zone_action(1, 0, ZoneAction::ResetRecommended).unwrap(),
        "already set"
    );
    assert!(
        !r.e.zone_action(1, 1, ZoneAction::ResetRecommended).unwrap(),
        "Empty: not Full"
    );
    assert_eq!(r.write(1, 2 * ZONE, 1, 1).status(), Status::SUCCESS);
    assert!(r
        .e
        .zone_action(1, 2, ZoneAction::FinishRecommended)
        .unwrap());
    assert!(r.e.zone_action(1, 2, ZoneAction::ReadOnly).unwrap());
    assert_eq!(seen.load(Ordering::SeqCst), 3 * 101, "one event per change");
    assert_eq!(r.zone(1, 2).0, RDONLY);
    assert_eq!(
        r.e.zone_report(1).unwrap()[2].4 & za::FZR,
        0,
        "no longer active: FZR gone"
    );
    assert_eq!(r.e.zone_report(1).unwrap()[0].4, za::RZR);
    assert_eq!(r.e.zone_resources(1), Some((0, 0)));
    assert_eq!(
        r.e.take_changed_zones(1, true),
        Some((vec![0, 2 * ZONE], false))
    );
    assert_eq!(
        r.e.take_changed_zones(1, true),
        Some((vec![], false)),
        "read clears it"
    );
    assert_eq!(r.zms(1, 0, zsa::RESET, false), Status::SUCCESS);
    assert_eq!(r.e.zone_report(1).unwrap()[0].4, 0, "reset clears RZR");
    assert!(
        r.e.zone_action(2, 0, ZoneAction::Offline).is_err(),
        "conventional"
    );
    assert!(
        r.e.zone_action(1, 16, ZoneAction::Offline).is_err(),
        "no zone 16"
    );
}

#[test]
fn command_sets_not_enabled_detach_their_namespaces() {
    // CC.CSS 000b: a zoned namespace is not attached (Invalid Namespace).
    let mut r = Rig::new(spec());
    r.e.set_io_command_sets(true, false);
    assert_eq!(r.write(1, 0, 1, 1).status(), dnr(Status::INVALID_FIELD));
    assert_eq!(r.write(2, 0, 1, 1).status(), Status::SUCCESS);
    r.e.set_io_command_sets(false, false);
    assert_eq!(r.write(2, 0, 1, 1).status(), dnr(Status::INVALID_FIELD));
    r.e.set_io_command_sets(true, true);
    assert_eq!(r.write(1, 0, 1, 1).status(), Status::SUCCESS);
    assert!(
        r.e.format_namespace(1, 512).is_err(),
        "Format NVM of a zoned namespace"
    );
}
