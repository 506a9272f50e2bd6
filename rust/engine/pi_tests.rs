//! End-to-end protection through the driver mock: every command with
//! metadata, PRACT and PRCHK, both guards, separate and extended metadata,
//! MPTR and metadata SGLs, Format NVM, and the corrupt-pi fault. Expected
//! tuples come from the bit-by-bit reference CRCs (`pi::crc::reference`,
//! checked against the published values), laid out by hand as the spec's
//! figures say, never from the code under test.

use super::*;
use crate::driver::{HostQueue, MockHost};
use crate::pi::crc::reference;
use crate::pi::{Format, Guard};
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::time::Duration;

const PRACT: u32 = 8;
const G: u32 = 4;
const A: u32 = 2;
const R: u32 = 1;

fn engine_with(lba_size: u32, fmt: Format) -> Engine {
    super::nvm_tests::engine_with(NamespaceSpec {
        size_bytes: 1 << 20,
        lba_size,
        backend: "ram".into(),
        metadata: fmt,
        ..NamespaceSpec::default()
    })
}

struct Rig {
    e: Engine,
    h: MockHost,
    q: HostQueue,
    data: u64,
    md: u64,
}

fn rig(lba_size: u32, fmt: Format) -> Rig {
    let e = engine_with(lba_size, fmt);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let data = h.alloc(64 << 10);
    let md = h.alloc(8192);
    Rig { e, h, q, data, md }
}

impl Rig {
    fn run(&mut self, s: Sqe) -> Status {
        self.q.push(&s);
        self.q.ring_sq(&self.e);
        let c: Cqe = self.q.wait(Duration::from_secs(5)).expect("no completion");
        self.q.ring_cq(&self.e);
        c.status()
    }

    /// A Read/Write/Compare/Verify/Write Zeroes with PRINFO, ILBRT (CDW14
    /// and CDW3 15:0), LBAT/LBATM, data at `self.data` (PRP list for long
    /// ones) and metadata at `self.md`.
    fn cmd(
        &mut self,
        opcode: u8,
        slba: u64,
        nlb: u32,
        prinfo: u32,
        ilbrt: u64,
        app: (u16, u16),
    ) -> Sqe {
        let mut s = Sqe::new(opcode, 7, 1);
        s.set_lba_range(slba, nlb);
        let list = self.h.alloc(4096);
        let pages: Vec<u8> = (1..16u64)
            .flat_map(|i| (self.data + i * 4096).to_le_bytes())
            .collect();
        self.h.mem.write(list, &pages);
        s.set_prps(self.data, list);
        s.dw[4] = self.md as u32;
        s.dw[5] = (self.md >> 32) as u32;
        s.dw[12] |= prinfo << 26;
        s.dw[14] = ilbrt as u32;
        s.dw[3] = (ilbrt >> 32) as u32 & 0xffff;
        s.dw[15] = u32::from(app.0) | u32::from(app.1) << 16;
        s
    }

    fn put(&self, at: u64, b: &[u8]) {
        self.h.mem.write(at, b);
    }

    fn get(&self, at: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.h.mem.read(at, &mut v);
        v
    }
}

/// The tuple a host computes: reference CRC of the block (plus the
/// metadata before the PI when it is last), fields big-endian.
fn tuple(f: Format, block: &[u8], md_before: &[u8], app: u16, reftag: u64) -> Vec<u8> {
    let mut covered = block.to_vec();
    covered.extend_from_slice(md_before);
    let mut t = Vec::new();
    match f.guard {
        Guard::Crc16 => {
            t.extend_from_slice(&reference::crc16(&covered).to_be_bytes());
            t.extend_from_slice(&app.to_be_bytes());
            t.extend_from_slice(&(reftag as u32).to_be_bytes());
        }
        Guard::Crc64 => {
            t.extend_from_slice(&reference::crc64(&covered).to_be_bytes());
            t.extend_from_slice(&app.to_be_bytes());
            t.extend_from_slice(&reftag.to_be_bytes()[2..]);
        }
    }
    t
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn type1(ms: u16, guard: Guard) -> Format {
    Format {
        ms,
        pi: 1,
        first: true,
        guard,
        ..Format::NONE
    }
}

#[test]
fn separate_metadata_type1_crc16_prchk_and_pract() {
    let f = type1(8, Guard::Crc16);
    let mut r = rig(512, f);
    let data = pattern(2048, 1);
    let mut md = Vec::new();
    for b in 0..4 {
        md.extend(tuple(
            f,
            &data[b * 512..(b + 1) * 512],
            &[],
            0x1234,
            10 + b as u64,
        ));
    }
    r.put(r.data, &data);
    r.put(r.md, &md);
    let s = r.cmd(op::WRITE, 10, 4, G | A | R, 10, (0x1234, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    r.put(r.md, &[0u8; 32]);
    r.put(r.data, &[0u8; 2048]);
    let s = r.cmd(op::READ, 10, 4, G | A | R, 10, (0x1234, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.data, 2048), data);
    assert_eq!(r.get(r.md, 32), md, "the stored PI, passed through");
    // A wrong reference tag, a bad guard, a masked app tag.
    let mut bad = md.clone();
    bad[8 + 7] ^= 1;
    r.put(r.data, &data);
    r.put(r.md, &bad);
    let s = r.cmd(op::WRITE, 10, 4, G | R, 10, (0, 0));
    assert_eq!(r.run(s), Status::REF_TAG_CHECK_ERROR.dnr());
    let s = r.cmd(op::WRITE, 10, 4, G, 10, (0, 0));
    assert_eq!(
        r.run(s),
        Status::SUCCESS,
        "ref not checked: stored as given"
    );
    let s = r.cmd(op::READ, 10, 4, G | R, 10, (0, 0));
    assert_eq!(r.run(s), Status::REF_TAG_CHECK_ERROR.dnr());
    r.put(r.data + 1000, &[0xEE]);
    r.put(r.md, &md);
    let s = r.cmd(op::WRITE, 10, 4, G | R, 10, (0, 0));
    assert_eq!(r.run(s), Status::GUARD_CHECK_ERROR.dnr());
    let s = r.cmd(op::WRITE, 10, 4, A, 10, (0x1230, 0xfff0));
    assert_eq!(
        r.run(s),
        Status::SUCCESS,
        "bits outside LBATM are not compared"
    );
    let s = r.cmd(op::READ, 10, 4, A, 10, (0x1235, 0x000f));
    assert_eq!(r.run(s), Status::APP_TAG_CHECK_ERROR.dnr());
    // Type 1: ILBRT must be the SLBA when the reference tag is checked.
    let s = r.cmd(op::READ, 10, 4, R, 11, (0, 0));
    assert_eq!(r.run(s), Status::INVALID_PI.dnr());
    // PRACT=1, MS = 8: no metadata moves; PI inserted, then stripped.
    r.put(r.data, &data);
    r.put(r.md, &[0x77; 32]);
    let s = r.cmd(op::WRITE, 20, 4, PRACT | G | R, 20, (0xBEEF, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::READ, 20, 4, PRACT | G | R, 20, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.md, 32), vec![0x77; 32], "stripped: MPTR untouched");
    let s = r.cmd(op::READ, 20, 4, 0, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let mut want = Vec::new();
    for b in 0..4 {
        want.extend(tuple(
            f,
            &data[b * 512..(b + 1) * 512],
            &[],
            0xBEEF,
            20 + b as u64,
        ));
    }
    assert_eq!(
        r.get(r.md, 32),
        want,
        "inserted: guard = CRC-16 of the data, ref = LBA"
    );
    // Never written: all FFh, every check passes (the escape).
    let s = r.cmd(op::READ, 100, 2, G | A | R, 100, (0, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.md, 16), vec![0xFF; 16]);
}

#[test]
fn crc64_type2_pi_last_extended_and_48_bit_reference_tags() {
    let f = Format {
        ms: 64,
        pi: 2,
        first: false,
        extended: true,
        guard: Guard::Crc64,
    };
    let mut r = rig(4096, f);
    let data = pattern(2 * 4096, 3);
    let user = pattern(2 * 48, 9);
    let ilbrt = 0x0000_8765_4321_0000u64;
    let mut inter = Vec::new();
    for b in 0..2 {
        inter.extend_from_slice(&data[b * 4096..(b + 1) * 4096]);
        let pre = &user[b * 48..(b + 1) * 48];
        inter.extend_from_slice(pre);
        inter.extend(tuple(
            f,
            &data[b * 4096..(b + 1) * 4096],
            pre,
            5,
            ilbrt + b as u64,
        ));
    }
    r.put(r.data, &inter);
    let s = r.cmd(op::WRITE, 3, 2, G | A | R, ilbrt, (5, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS, "type 2: any ILBRT");
    r.put(r.data, &vec![0u8; inter.len()]);
    let s = r.cmd(op::READ, 3, 2, G | A | R, ilbrt, (5, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.data, inter.len()), inter);
    // Bits 47:32 come from CDW3: drop them and the reference check fails.
    let s = r.cmd(op::READ, 3, 2, R, ilbrt & 0xffff_ffff, (0, 0));
    assert_eq!(r.run(s), Status::REF_TAG_CHECK_ERROR.dnr());
    // PRACT with MS > PI size: metadata moves, the PI in it is replaced.
    let mut inter2 = inter.clone();
    for b in 0..2 {
        let at = b * (4096 + 64) + 4096 + 48;
        inter2[at..at + 16].fill(0);
    }
    r.put(r.data, &inter2);
    let s = r.cmd(op::WRITE, 3, 2, PRACT, ilbrt, (5, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::READ, 3, 2, PRACT | G | R, ilbrt, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(
        r.get(r.data, inter.len()),
        inter,
        "passed through with MS > PI size"
    );
}

#[test]
fn metadata_pointers_sgl_and_bad_input() {
    let f = type1(16, Guard::Crc64);
    let mut r = rig(4096, f);
    let data = pattern(4096, 5);
    r.put(r.data, &data);
    // PSDT 10b: MPTR points at one SGL data block descriptor.
    let desc_at = r.h.alloc(4096);
    let mut desc = [0u8; 16];
    desc[..8].copy_from_slice(&r.md.to_le_bytes());
    desc[8..12].copy_from_slice(&16u32.to_le_bytes());
    r.put(desc_at, &desc);
    let mut s = r.cmd(op::WRITE, 0, 1, PRACT | G | R, 0, (0, 0));
    s.dw[0] |= 2 << 14;
    s.dw[6] = r.data as u32;
    s.dw[7] = (r.data >> 32) as u32;
    s.dw[8] = 4096;
    s.dw[9] = 0;
    s.dw[4] = desc_at as u32;
    s.dw[5] = (desc_at >> 32) as u32;
    assert_eq!(
        r.run(s),
        Status::SUCCESS,
        "PRACT, MS = 16: no metadata moves"
    );
    let mut rd = s;
    rd.dw[0] = (rd.dw[0] & !0xff) | u32::from(op::READ);
    rd.dw[12] &= !(0xf << 26);
    assert_eq!(r.run(rd), Status::SUCCESS);
    assert_eq!(r.get(r.md, 16), tuple(f, &data, &[], 0, 0));
    // Too short a metadata SGL, a misaligned descriptor, MPTR outside memory.
    desc[8..12].copy_from_slice(&8u32.to_le_bytes());
    r.put(desc_at, &desc);
    assert_eq!(r.run(rd), Status::METADATA_SGL_LENGTH_INVALID.dnr());
    let mut odd = rd;
    odd.dw[4] += 4;
    assert_eq!(r.run(odd), Status::INVALID_FIELD.dnr());
    let mut out = r.cmd(op::READ, 0, 1, 0, 0, (0, 0));
    out.dw[4] = 0;
    out.dw[5] = 0x40;
    assert_eq!(r.run(out), Status::DATA_TRANSFER_ERROR.dnr());
    let mut odd = r.cmd(op::READ, 0, 1, 0, 0, (0, 0));
    odd.dw[4] += 2;
    assert_eq!(
        r.run(odd),
        Status::INVALID_FIELD.dnr(),
        "PSDT 00b MPTR must be dword aligned"
    );
}

#[test]
fn verify_compare_write_zeroes_and_copy() {
    let f = type1(16, Guard::Crc64);
    let mut r = rig(4096, f);
    let data = pattern(4 * 4096, 7);
    r.put(r.data, &data);
    let s = r.cmd(op::WRITE, 0, 4, PRACT, 0, (0x42, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::VERIFY, 0, 4, G | A | R, 0, (0x42, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::VERIFY, 0, 4, PRACT | G, 0, (0, 0));
    assert_eq!(
        r.run(s),
        Status::INVALID_FIELD.dnr(),
        "Verify: PRACT shall be 0"
    );
    let s = r.cmd(op::VERIFY, 0, 4, A, 0, (0x43, 0xffff));
    assert_eq!(r.run(s), Status::APP_TAG_CHECK_ERROR.dnr());
    // Compare: same data and PI check, then a byte off.
    let s = r.cmd(op::COMPARE, 0, 4, G | R, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    r.put(r.data + 5, &[!data[5]]);
    let s = r.cmd(op::COMPARE, 0, 4, G | R, 0, (0, 0));
    assert_eq!(r.run(s), Status::COMPARE_FAILURE.dnr());
    let s = r.cmd(op::COMPARE, 0, 4, PRACT, 0, (0, 0));
    assert_eq!(r.run(s), Status::INVALID_FIELD.dnr());
    // Write Zeroes: PRCHK refused; PRACT inserts PI over zero blocks.
    let s = r.cmd(op::WRITE_ZEROES, 8, 2, G, 8, (0, 0));
    assert_eq!(r.run(s), Status::INVALID_PI.dnr());
    let s = r.cmd(op::WRITE_ZEROES, 8, 2, PRACT, 8, (9, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::READ, 8, 2, G | A | R, 8, (9, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    let md = r.get(r.md, 32);
    assert_eq!(
        &md[..8],
        &0x6482_D367_EB22_B64Eu64.to_be_bytes(),
        "Figure 121: 4 KiB of zeroes"
    );
    assert_eq!(md[16..], tuple(f, &[0u8; 4096], &[], 9, 9)[..]);
    let s = r.cmd(op::WRITE_ZEROES, 8, 2, 0, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::READ, 8, 1, 0, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(
        r.get(r.md, 16),
        vec![0u8; 16],
        "PRACT=0: PI written as zeroes"
    );
    let mut deac = r.cmd(op::WRITE_ZEROES, 8, 1, 0, 0, (0, 0));
    deac.dw[12] |= 1 << 25;
    assert_eq!(r.run(deac), Status::SUCCESS);
    let s = r.cmd(op::READ, 8, 1, 0, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.md, 16), vec![0xFFu8; 16], "deallocated");
    // Copy: format 0 refused on the 64b guard; format 1 checks the source
    // against its entry (EILBRT big-endian in bytes 35:30) and inserts at
    // the destination.
    let ranges = r.h.alloc(4096);
    let mut e = [0u8; 40];
    e[8..16].copy_from_slice(&0u64.to_le_bytes());
    e[16..18].copy_from_slice(&3u16.to_le_bytes());
    e[30..36].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    e[36..38].copy_from_slice(&0x42u16.to_le_bytes());
    e[38..40].copy_from_slice(&0xffffu16.to_le_bytes());
    r.put(ranges, &e);
    let mut c = Sqe::new(op::COPY, 9, 1);
    c.set_prps(ranges, 0);
    c.dw[10] = 40;
    c.dw[12] = 1 << 8 | (G | A | R) << 12 | PRACT << 26;
    c.dw[14] = 40;
    c.dw[15] = 0x77;
    assert_eq!(
        r.run(c),
        Status::INVALID_FIELD.dnr(),
        "PRACT of PRINFOR and PRINFOW differ"
    );
    c.dw[12] = 1 << 8 | (PRACT | G | A | R) << 12 | PRACT << 26;
    assert_eq!(r.run(c), Status::SUCCESS);
    let s = r.cmd(op::READ, 40, 4, G | A | R, 40, (0x77, 0xffff));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.data, 4096 * 4), data, "copied data");
    let mut c0 = c;
    c0.dw[12] &= !(0xf << 8);
    let e0 = [0u8; 32];
    r.put(ranges, &e0);
    assert_eq!(r.run(c0), Status::INVALID_NAMESPACE.dnr());
    r.put(ranges, &e);
    let mut bad = c;
    bad.dw[12] = 1 << 8 | (PRACT | A) << 12 | PRACT << 26;
    let mut wrong = e;
    wrong[36..38].copy_from_slice(&0x41u16.to_le_bytes());
    r.put(ranges, &wrong);
    assert_eq!(
        r.run(bad),
        Status::APP_TAG_CHECK_ERROR.dnr(),
        "source checked per PRINFOR"
    );
}

#[test]
fn type3_refuses_the_reference_check_and_escapes_with_all_ones() {
    let f = Format {
        ms: 8,
        pi: 3,
        ..Format::NONE
    };
    let mut r = rig(512, f);
    let s = r.cmd(op::READ, 0, 1, R, 0, (0, 0));
    assert_eq!(
        r.run(s),
        Status::INVALID_PI,
        "type 3 with PRCHK ref: Invalid PI, no DNR (as QEMU)"
    );
    let data = pattern(512, 2);
    r.put(r.data, &data);
    let s = r.cmd(op::WRITE, 5, 1, PRACT, 0xCAFE, (1, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let s = r.cmd(op::READ, 5, 1, G, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(
        r.get(r.md, 8),
        tuple(f, &data, &[], 1, 0xCAFE),
        "type 3: ref = ILBRT as given"
    );
}

#[test]
fn format_nvm_switches_metadata_and_corrupt_pi_fires() {
    let mut r = rig(512, Format::NONE);
    let data = pattern(512, 4);
    r.put(r.data, &data);
    // Without PI, PRINFO is ignored (NVM Command Set 1.0, Figure 9).
    let s = r.cmd(op::WRITE, 0, 1, PRACT | G | A | R, 99, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let f = type1(8, Guard::Crc16);
    assert!(r.e.format_nvm(1, 4096, type1(8, Guard::Crc64)).is_err());
    r.e.format_nvm(1, 512, f).unwrap();
    assert_eq!(r.e.namespace_format(1), Some(f));
    let s = r.cmd(op::READ, 0, 1, G | R, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.get(r.data, 512), vec![0u8; 512], "formatted: data erased");
    assert_eq!(
        r.get(r.md, 8),
        vec![0xFF; 8],
        "formatted: metadata deallocated"
    );
    r.put(r.data, &data);
    let s = r.cmd(op::WRITE, 0, 1, PRACT, 0, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    use crate::engine::faults::{Action, Firing, Match, QueueMatch};
    use crate::pi::tuple::Field;
    let m = Match {
        queue: QueueMatch::Io,
        opcode: Some(op::READ),
        nsid: None,
        lba: None,
        zone: None,
    };
    let fire_once = Firing {
        count: 1,
        ..Firing::default()
    };
    r.e.add_fault(
        m,
        Action::CorruptPi {
            field: Field::Ref,
            xor: 1,
        },
        fire_once,
    )
    .unwrap();
    let s = r.cmd(op::READ, 0, 1, G | R, 0, (0, 0));
    assert_eq!(
        r.run(s),
        Status::SUCCESS,
        "the device's check ran before the corruption"
    );
    let mut want = tuple(f, &data, &[], 0, 0);
    want[7] ^= 1;
    assert_eq!(r.get(r.md, 8), want, "the host sees a wrong reference tag");
    r.e.add_fault(
        m,
        Action::CorruptPi {
            field: Field::Guard,
            xor: 0xFF,
        },
        fire_once,
    )
    .unwrap();
    let s = r.cmd(op::READ, 0, 1, PRACT | G | R, 0, (0, 0));
    assert_eq!(
        r.run(s),
        Status::GUARD_CHECK_ERROR.dnr(),
        "stripped PI: the device's check sees it"
    );
}

#[test]
fn a_power_loss_rolls_metadata_back_with_the_data() {
    let f = type1(8, Guard::Crc16);
    let mut r = rig(512, f);
    r.e.track_unflushed(true);
    let old = pattern(512, 1);
    let new = pattern(512, 2);
    r.put(r.data, &old);
    let s = r.cmd(op::WRITE, 4, 1, PRACT, 4, (0, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    let mut flush = Sqe::new(op::FLUSH, 8, 1);
    flush.dw[1] = 1;
    assert_eq!(r.run(flush), Status::SUCCESS);
    r.put(r.data, &new);
    let s = r.cmd(op::WRITE, 4, 1, PRACT, 4, (0x99, 0));
    assert_eq!(r.run(s), Status::SUCCESS);
    assert_eq!(r.e.power_loss(), 1, "one unflushed block");
    r.e.power_on();
    r.q = r.h.create_queue_pair(&r.e, 1, 16, 1, false).unwrap();
    r.put(r.md, &[0u8; 8]);
    let s = r.cmd(op::READ, 4, 1, G | R, 4, (0, 0));
    assert_eq!(
        r.run(s),
        Status::SUCCESS,
        "data and PI rolled back together"
    );
    assert_eq!(r.get(r.data, 512), old);
    assert_eq!(r.get(r.md, 8), tuple(f, &old, &[], 0, 4));
}
