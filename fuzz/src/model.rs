//! The oracle's side of the `sqe` target: the guest memory layout, a
//! reference PRP walk written from the spec (NVMe Base 2.0, 4.1.1) rather
//! than from rust/cmd/prp.rs, the statuses each opcode may complete with,
//! and what each command may do to a namespace.

use nvmefast::spec::opcode::io as op;
use nvmefast::spec::{Sqe, Status};

/// CC.MPS page size the engine runs with.
pub const PAGE: u64 = 4096;

/// Region A: fd-backed, writable, at IOVA 0, filled from the fuzz input.
pub const A_IOVA: u64 = 0;
pub const A_LEN: usize = 0x1_0000;
/// Region B: fd-backed, read-only, after a hole.
pub const B_IOVA: u64 = 0x2_0000;
pub const B_LEN: usize = 0x2000;
/// Region C: remote (no fd), writable, reached through the fake transport.
pub const C_IOVA: u64 = 0x3_0000;
pub const C_LEN: usize = 0x2000;
/// Region D: the harness's own rings and read-back buffer, far above.
pub const D_IOVA: u64 = 0x1_0000_0000;
pub const D_LEN: usize = 0x2_0000;
/// Region E: mapped by loss inputs only ([`crate::loss`]), for one input:
/// an unsealed memfd, so the SIGBUS guard watches it, that the input
/// truncates under the device.
pub const E_IOVA: u64 = 0x4_0000;
pub const E_LEN: usize = 0x4000;

/// Largest data transfer (the Python config's default, MDTS 5).
pub const MDTS_BYTES: u64 = 128 << 10;

/// The namespaces: (NSID, backend, size, LBA size). All but 2 are
/// checked byte for byte after every command; 2 stores nothing; 4 is a file
/// in /dev/shm served through io_uring, so its Reads and Writes complete
/// asynchronously; 5 is the embedder's storage ([`crate::storage`]), which
/// checks every call the core makes to it; 6 ([`PI_NSID`]) carries 8 bytes
/// of separate metadata with type 1 protection information, so MPTR,
/// PRINFO, ILBRT (CDW14), LBAT/LBATM (CDW15) of the input matter. The
/// zoned namespace ([`ZONED`]) comes after them.
pub const NAMESPACES: [(u32, &str, u64, u32); 6] = [
    (1, "ram", 64 << 10, 512),
    (2, "null", 1 << 20, 512),
    (3, "ram", 64 << 10, 4096),
    (4, "file", 64 << 10, 512),
    (5, "custom", 64 << 10, 512),
    (6, "ram", 64 << 10, 512),
];

/// The namespace with metadata and protection information.
pub const PI_NSID: u32 = 6;

/// The metadata format of namespace `nsid`.
pub fn metadata(nsid: u32) -> nvmefast::pi::Format {
    if nsid != PI_NSID {
        return nvmefast::pi::Format::NONE;
    }
    nvmefast::pi::Format {
        ms: 8,
        pi: 1,
        ..nvmefast::pi::Format::NONE
    }
}

/// The zoned namespace, after the others: (NSID, size, LBA size, zone LBAs,
/// zone capacity LBAs). RAM, MOR 2 / MAR 3 (counts), 64-byte extensions,
/// ZASL 8 KiB. Its bytes are not checked against an image (a read above a
/// write pointer returns zeroes, not what was there); the oracle checks its
/// statuses against the ZNS set, and every zone is reset after each input.
pub const ZONED: (u32, u64, u32, u64, u64) = (NAMESPACES.len() as u32 + 1, 64 << 10, 512, 16, 12);

/// Zone commands (ZNS 1.1, Figure 12).
pub const ZONE_OPCODES: [u8; 3] = [op::ZONE_MGMT_SEND, op::ZONE_MGMT_RECV, op::ZONE_APPEND];

/// Which region a guest range lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    A,
    B,
    C,
    D,
    E,
}

/// The region holding all of `[iova, iova+len)` and the offset in it.
pub fn region_of(iova: u64, len: u64) -> Option<(Region, usize)> {
    let end = iova.checked_add(len)?;
    [
        (Region::A, A_IOVA, A_LEN),
        (Region::B, B_IOVA, B_LEN),
        (Region::C, C_IOVA, C_LEN),
        (Region::D, D_IOVA, D_LEN),
        (Region::E, E_IOVA, E_LEN),
    ]
    .into_iter()
    .find(|&(_, base, size)| iova >= base && end <= base + size as u64)
    .map(|(r, base, _)| (r, (iova - base) as usize))
}

/// Guest memory as the host left it before the command.
pub trait GuestView {
    /// Copies `out.len()` bytes at `off` of region `r`; false when the
    /// model does not know that region's bytes.
    fn read(&self, r: Region, off: usize, out: &mut [u8]) -> bool;

    /// Region E as the device finds it: None when no access reaches it
    /// (not mapped, or lost: its memory shrank and the device knows);
    /// else how many of its bytes are backed by the file (page granular:
    /// an access past them faults) and whether it is mapped writable.
    fn region_e(&self) -> Option<Backed> {
        None
    }
}

/// The backed part of region E: `[0, valid)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backed {
    pub valid: usize,
    pub writable: bool,
}

/// Why the reference walk refused a data pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefError {
    /// An entry with an offset where the spec forbids one.
    Offset,
    /// A list or data page outside mapped memory, or a device write into
    /// the read-only region.
    Unmapped,
    /// The walk reached memory the model does not know (region D): no
    /// verdict.
    Unknown,
    /// A list entry lies in region E past its file's end: reading it
    /// faults, and the SIGBUS guard turns that into Data Transfer Error
    /// (the region lost).
    Faults,
}

impl RefError {
    /// The status the device must complete with for this failure (None:
    /// no verdict).
    pub fn status(self) -> Option<Status> {
        match self {
            RefError::Offset => Some(Status::INVALID_PRP_OFFSET.dnr()),
            RefError::Unmapped | RefError::Faults => Some(Status::DATA_TRANSFER_ERROR.dnr()),
            RefError::Unknown => None,
        }
    }
}

/// One piece of a transfer: guest IOVA and length.
pub type Piece = (u64, usize);

/// `[iova, iova+len)` as the device's walk finds it: inside one region it
/// may access that way, or why not. A range in region E past its file's
/// end is found: it is the data copy after the walk that faults there.
fn reachable(
    g: &dyn GuestView,
    iova: u64,
    len: u64,
    write: bool,
) -> Result<(Region, usize), RefError> {
    match region_of(iova, len) {
        Some((Region::B, _)) if write => Err(RefError::Unmapped),
        Some((Region::D, _)) => Err(RefError::Unknown),
        Some((Region::E, off)) => match g.region_e() {
            Some(e) if e.writable || !write => Ok((Region::E, off)),
            _ => Err(RefError::Unmapped),
        },
        Some(found) => Ok(found),
        None => Err(RefError::Unmapped),
    }
}

fn piece(
    g: &dyn GuestView,
    out: &mut Vec<Piece>,
    iova: u64,
    len: u64,
    write: bool,
) -> Result<(), RefError> {
    reachable(g, iova, len, write)?;
    out.push((iova, len as usize));
    Ok(())
}

/// True when a data copy through `pieces` touches region E past its
/// file's end (a fault: the SIGBUS guard makes the command a Data Transfer
/// Error and the region lost), when the copy is a CPU access.
pub fn faults(g: &dyn GuestView, pieces: &[Piece]) -> bool {
    pieces
        .iter()
        .any(|&(iova, len)| past_end(g, iova, len as u64))
}

/// True when `[iova, iova+len)` lies in region E, reachable, past its
/// file's end.
fn past_end(g: &dyn GuestView, iova: u64, len: u64) -> bool {
    match (region_of(iova, len), g.region_e()) {
        (Some((Region::E, off)), Some(e)) => off as u64 + len > e.valid as u64,
        _ => false,
    }
}

fn entry(g: &dyn GuestView, at: u64) -> Result<u64, RefError> {
    let (r, off) = reachable(g, at, 8, false)?;
    if past_end(g, at, 8) {
        return Err(RefError::Faults);
    }
    let mut b = [0u8; 8];
    if !g.read(r, off, &mut b) {
        return Err(RefError::Unknown);
    }
    Ok(u64::from_le_bytes(b))
}

/// The pieces PRP1/PRP2 describe for `len` bytes, from the spec: PRP1 may
/// have a dword-aligned offset; a transfer ending in the second page takes
/// PRP2 as that page; a longer one takes PRP2 as a (qword-aligned) PRP list
/// whose last entry in each list page points to the next, page-aligned,
/// list page; every list entry is page aligned.
pub fn prp_pieces(
    g: &dyn GuestView,
    prp1: u64,
    prp2: u64,
    len: u64,
    write: bool,
) -> Result<Vec<Piece>, RefError> {
    let mut out = Vec::new();
    if !prp1.is_multiple_of(4) {
        return Err(RefError::Offset);
    }
    let first = len.min(PAGE - prp1 % PAGE);
    piece(g, &mut out, prp1, first, write)?;
    let mut left = len - first;
    if left == 0 {
        return Ok(out);
    }
    if left <= PAGE {
        if !prp2.is_multiple_of(PAGE) {
            return Err(RefError::Offset);
        }
        piece(g, &mut out, prp2, left, write)?;
        return Ok(out);
    }
    if !prp2.is_multiple_of(8) {
        return Err(RefError::Offset);
    }
    let mut list = prp2;
    'pages: loop {
        let slots = (PAGE - list % PAGE) / 8;
        for i in 0..slots {
            let e = entry(g, list.checked_add(i * 8).ok_or(RefError::Unmapped)?)?;
            if e % PAGE != 0 {
                return Err(RefError::Offset);
            }
            if i == slots - 1 && left > PAGE {
                list = e;
                continue 'pages;
            }
            let n = left.min(PAGE);
            piece(g, &mut out, e, n, write)?;
            left -= n;
            if left == 0 {
                return Ok(out);
            }
        }
    }
}

/// The bytes `pieces` describe, in order.
pub fn gather(g: &dyn GuestView, pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(iova, len) in pieces {
        let at = out.len();
        out.resize(at + len, 0);
        let (r, off) = region_of(iova, len as u64).expect("piece outside the layout");
        // prp_pieces never returns a piece of an unknown region.
        g.read(r, off, &mut out[at..]);
    }
    out
}

/// True when `status` is one the spec names for what `sqe` can go wrong
/// with (and that this controller can produce), Success included.
pub fn status_allowed(sqe: &Sqe, status: Status) -> bool {
    let s = |x: Status| x.dnr();
    let common = [s(Status::INVALID_FIELD), s(Status::INVALID_NAMESPACE)];
    let dptr = [
        s(Status::INVALID_PRP_OFFSET),
        s(Status::DATA_TRANSFER_ERROR),
        s(Status::INVALID_SGL_DESCRIPTOR),
        s(Status::INVALID_NUM_SGL_DESCRIPTORS),
        s(Status::DATA_SGL_LENGTH_INVALID),
        s(Status::SGL_TYPE_INVALID),
    ];
    let range = s(Status::LBA_OUT_OF_RANGE);
    let zoned = sqe.nsid() == ZONED.0;
    if zoned {
        // ZNS 1.1 Figure 11 and 3.3: the zone statuses of each command, DNR
        // set except inside Copy; Zone Management Send on a zone the
        // controller made read only or offline cannot happen here.
        let zone = [
            Status::ZONE_BOUNDARY_ERROR,
            Status::ZONE_IS_FULL,
            Status::ZONE_IS_OFFLINE,
            Status::ZONE_INVALID_WRITE,
            Status::TOO_MANY_ACTIVE_ZONES,
            Status::TOO_MANY_OPEN_ZONES,
            Status::INVALID_ZONE_STATE_TRANSITION,
        ];
        let by_dnr = |x: Status| {
            if sqe.opcode() == op::COPY {
                zone.contains(&x)
            } else {
                zone.iter().any(|&z| z.dnr() == x)
            }
        };
        if status == Status::SUCCESS && ZONE_OPCODES.contains(&sqe.opcode()) {
            return true;
        }
        if status != Status::SUCCESS
            && (by_dnr(status) || status == range || dptr.contains(&status))
        {
            return true;
        }
        if sqe.opcode() == op::COMPARE && status == s(Status::COMPARE_FAILURE) {
            return true;
        }
        if sqe.opcode() == op::COPY && status == s(Status::COMMAND_SIZE_LIMIT_EXCEEDED) {
            return true;
        }
    }
    if status == Status::SUCCESS {
        return matches!(
            sqe.opcode(),
            op::READ
                | op::WRITE
                | op::FLUSH
                | op::WRITE_UNCORRECTABLE
                | op::COMPARE
                | op::WRITE_ZEROES
                | op::DATASET_MANAGEMENT
                | op::VERIFY
                | op::COPY
        );
    }
    if common.contains(&status) {
        return true;
    }
    // End-to-end protection: the checks' statuses, a bad PRINFO for the
    // format, a metadata SGL of the wrong length.
    let pi = [
        s(Status::GUARD_CHECK_ERROR),
        s(Status::APP_TAG_CHECK_ERROR),
        s(Status::REF_TAG_CHECK_ERROR),
        s(Status::INVALID_PI),
        Status::INVALID_PI,
        s(Status::METADATA_SGL_LENGTH_INVALID),
    ];
    let pi_opcodes = matches!(
        sqe.opcode(),
        op::READ | op::WRITE | op::COMPARE | op::VERIFY | op::WRITE_ZEROES | op::COPY
    );
    if sqe.nsid() == PI_NSID && pi_opcodes && pi.contains(&status) {
        return true;
    }
    match sqe.opcode() {
        op::READ | op::WRITE => status == range || dptr.contains(&status),
        op::COMPARE => {
            status == range || dptr.contains(&status) || status == s(Status::COMPARE_FAILURE)
        }
        op::FLUSH => false,
        op::WRITE_ZEROES | op::VERIFY | op::WRITE_UNCORRECTABLE => status == range,
        op::DATASET_MANAGEMENT => status == range || dptr.contains(&status),
        op::COPY => {
            status == range
                || dptr.contains(&status)
                || status == s(Status::COMMAND_SIZE_LIMIT_EXCEEDED)
        }
        _ => status == s(Status::INVALID_OPCODE),
    }
}

/// What a namespace may look like after a command, given its image before.
#[derive(Debug)]
pub enum Expect {
    /// Exactly these bytes.
    Exact(Vec<u8>),
    /// Bytes outside `[start, end)` unchanged (an SGL Write, whose data the
    /// model does not compute).
    Within(usize, usize),
    /// Changed bytes are all zero (an SGL Dataset Management deallocate).
    ZeroOnly,
    /// Bytes below `start` unchanged (an SGL Copy to SDLBA).
    From(usize),
}

impl Expect {
    /// Why `after` breaks the expectation against `before`, if it does.
    pub fn violation(&self, before: &[u8], after: &[u8]) -> Option<String> {
        if let Expect::Exact(want) = self {
            if want[..] == after[..] {
                return None;
            }
        }
        let first_diff =
            |lo: usize, hi: usize| (lo..hi.min(after.len())).find(|&i| before[i] != after[i]);
        match self {
            Expect::Exact(want) => (0..want.len()).find(|&i| want[i] != after[i]).map(|i| {
                format!(
                    "byte {i:#x} is {:#04x}, expected {:#04x}",
                    after[i], want[i]
                )
            }),
            Expect::Within(start, end) => first_diff(0, *start)
                .or_else(|| first_diff(*end, after.len()))
                .map(|i| format!("byte {i:#x} outside [{start:#x}, {end:#x}) changed")),
            Expect::ZeroOnly => (0..after.len())
                .find(|&i| before[i] != after[i] && after[i] != 0)
                .map(|i| format!("byte {i:#x} changed to non-zero {:#04x}", after[i])),
            Expect::From(start) => {
                first_diff(0, *start).map(|i| format!("byte {i:#x} below {start:#x} changed"))
            }
        }
    }
}

/// SLBA and 1-based NLB of an LBA command.
pub fn lba_range(sqe: &Sqe) -> (u64, u64) {
    let slba = u64::from(sqe.cdw(10)) | (u64::from(sqe.cdw(11)) << 32);
    (slba, u64::from(sqe.cdw(12) & 0xffff) + 1)
}

/// The data-pointer buffer of a command that reads `len` bytes of guest
/// memory (Write data, DSM and Copy range lists), when the model can
/// compute it (PRPs; None for SGLs or a walk the model refuses).
pub fn host_buffer(g: &dyn GuestView, sqe: &Sqe, len: u64) -> Option<Vec<u8>> {
    if sqe.psdt() != 0 {
        return None;
    }
    let pieces = prp_pieces(g, sqe.prp1(), sqe.prp2(), len, false).ok()?;
    Some(gather(g, &pieces))
}

/// Byte span of `n` LBAs from `lba`, if it lies inside a namespace of
/// `size` bytes: a command that succeeded with a span outside is a finding.
fn span(lba: u64, n: u64, lbs: u64, size: usize) -> Result<(usize, usize), String> {
    let lo = lba.checked_mul(lbs);
    let hi = lba.checked_add(n).and_then(|e| e.checked_mul(lbs));
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi <= size as u64 => Ok((lo as usize, hi as usize)),
        _ => Err(format!(
            "succeeded on LBAs {lba:#x}+{n:#x}, outside the namespace"
        )),
    }
}

/// What a successful `sqe` may do to namespace `nsid` (LBA size `lbs`),
/// whose bytes were `before`; Err when the success itself is wrong.
pub fn namespace_after(
    g: &dyn GuestView,
    sqe: &Sqe,
    nsid: u32,
    lbs: u64,
    before: &[u8],
) -> Result<Expect, String> {
    if sqe.nsid() != nsid {
        return Ok(Expect::Exact(before.to_vec()));
    }
    let size = before.len();
    let (slba, nlb) = lba_range(sqe);
    let range = || span(slba, nlb, lbs, size);
    Ok(match sqe.opcode() {
        op::WRITE => {
            let (lo, hi) = range()?;
            match host_buffer(g, sqe, nlb * lbs) {
                Some(data) => {
                    let mut want = before.to_vec();
                    want[lo..hi].copy_from_slice(&data);
                    Expect::Exact(want)
                }
                None => Expect::Within(lo, hi),
            }
        }
        op::WRITE_ZEROES => {
            let (lo, hi) = range()?;
            let mut want = before.to_vec();
            want[lo..hi].fill(0);
            Expect::Exact(want)
        }
        op::DATASET_MANAGEMENT if sqe.cdw(11) & (1 << 2) != 0 => {
            let nr = u64::from(sqe.cdw(10) & 0xff) + 1;
            match host_buffer(g, sqe, nr * 16) {
                Some(list) => {
                    let mut want = before.to_vec();
                    for r in list.chunks_exact(16) {
                        let len = u64::from(u32::from_le_bytes(r[4..8].try_into().unwrap()));
                        let start = u64::from_le_bytes(r[8..16].try_into().unwrap());
                        let (lo, hi) = span(start, len, lbs, size)?;
                        want[lo..hi].fill(0);
                    }
                    Expect::Exact(want)
                }
                None => Expect::ZeroOnly,
            }
        }
        op::COPY => {
            let nr = u64::from(sqe.cdw(12) & 0xff) + 1;
            match host_buffer(g, sqe, nr * 32) {
                Some(list) => {
                    let mut want = before.to_vec();
                    let mut dst = slba;
                    for e in list.chunks_exact(32) {
                        let src = u64::from_le_bytes(e[8..16].try_into().unwrap());
                        let n = u64::from(u16::from_le_bytes([e[16], e[17]])) + 1;
                        let (s, e) = span(src, n, lbs, size)?;
                        let (d, _) = span(dst, n, lbs, size)?;
                        want.copy_within(s..e, d);
                        dst = dst.checked_add(n).ok_or("Copy destination overflows")?;
                    }
                    Expect::Exact(want)
                }
                None => Expect::From(span(slba, 1, lbs, size)?.0),
            }
        }
        _ => Expect::Exact(before.to_vec()),
    })
}
