//! PRCHK and PRACT (NVM Command Set 1.0, 5.2.2 and Figure 9): the guard of
//! each block, the checks of the guard, application tag and reference tag
//! against the expected values of the command, the escapes that switch a
//! block's checks off, and the tuples PRACT inserts.

use super::crc::{self, Running};
use super::tuple::{self, ref_mask, Tuple};
use super::Format;
#[cfg(test)]
use super::Guard;

/// The checks PRCHK (CDW12 bits 28:26) asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    pub guard: bool,
    pub app: bool,
    pub reftag: bool,
}

impl Checks {
    /// From the 3-bit PRCHK value (guard 4h, application tag 2h, reference tag 1h).
    pub fn from_prchk(bits: u32) -> Checks {
        Checks {
            guard: bits & 4 != 0,
            app: bits & 2 != 0,
            reftag: bits & 1 != 0,
        }
    }

    /// True when nothing is checked.
    pub fn none(self) -> bool {
        !(self.guard || self.app || self.reftag)
    }
}

/// What the command expects (or inserts): (E)ILBRT, (E)LBAT, (E)LBATM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    /// Reference tag of the first block (32 or 48 bits).
    pub ilbrt: u64,
    pub lbat: u16,
    /// Application tag mask: only its set bits are compared.
    pub lbatm: u16,
}

/// Which check failed, at which block of the command (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PiError {
    /// End-to-end Guard Check Error.
    #[error("guard check failed at block {0}")]
    Guard(u64),
    /// End-to-end Application Tag Check Error.
    #[error("application tag check failed at block {0}")]
    App(u64),
    /// End-to-end Reference Tag Check Error.
    #[error("reference tag check failed at block {0}")]
    Ref(u64),
}

impl PiError {
    /// The block of the command that failed.
    pub fn block(self) -> u64 {
        match self {
            PiError::Guard(b) | PiError::App(b) | PiError::Ref(b) => b,
        }
    }
}

/// Computes the guard of each of `nlb` blocks of `lbs` bytes whose data
/// is `pieces` in order (any split), into `out`. With PI last in metadata
/// larger than the tuple, the guard also covers the metadata bytes before
/// the PI (`md`, `fmt.ms` bytes per block).
pub fn guards(fmt: Format, lbs: usize, pieces: &[&[u8]], md: &[u8], out: &mut Vec<u64>) {
    out.clear();
    let prefix = if fmt.first { 0 } else { fmt.pi_offset() };
    if let ([data], 0) = (pieces, prefix) {
        // The usual case: one contiguous piece, the guard over the data
        // alone. One CRC call per block, nothing else.
        out.extend(data.chunks(lbs).map(|b| crc::of(fmt.guard, b)));
        return;
    }
    let ms = usize::from(fmt.ms);
    let mut piece = 0usize;
    let mut at = 0usize;
    let mut block = 0usize;
    loop {
        while piece < pieces.len() && at == pieces[piece].len() {
            piece += 1;
            at = 0;
        }
        if piece == pieces.len() {
            return;
        }
        let p = pieces[piece];
        let extra = &md[block * ms..block * ms + prefix];
        if p.len() - at >= lbs && prefix == 0 {
            out.push(crc::of(fmt.guard, &p[at..at + lbs]));
            at += lbs;
        } else {
            let mut r = Running::new(fmt.guard);
            let mut need = lbs;
            while need > 0 && piece < pieces.len() {
                let p = pieces[piece];
                let n = need.min(p.len() - at);
                r.update(&p[at..at + n]);
                need -= n;
                at += n;
                if at == p.len() {
                    piece += 1;
                    at = 0;
                }
            }
            r.update(extra);
            out.push(r.finish());
        }
        block += 1;
    }
}

/// True when the tuple switches every check of its block off.
#[inline]
fn escaped(fmt: Format, t: &Tuple) -> bool {
    t.app == 0xFFFF && (fmt.pi != 3 || t.reftag == ref_mask(fmt.guard))
}

/// Checks the PI in `md` (`fmt.ms` bytes per block) of the blocks whose
/// guards are `guards` against `tags`, per `checks`.
pub fn check(
    fmt: Format,
    guards: &[u64],
    md: &[u8],
    checks: Checks,
    tags: Tags,
) -> Result<(), PiError> {
    let ms = usize::from(fmt.ms);
    let off = fmt.pi_offset();
    let mask = ref_mask(fmt.guard);
    // Every block's metadata is there (a caller's bug otherwise: the zip
    // below must not skip a block's checks).
    assert!(
        md.len() / ms >= guards.len(),
        "metadata shorter than the blocks"
    );
    for (i, (&g, m)) in guards.iter().zip(md.chunks(ms)).enumerate() {
        let t = tuple::read(fmt.guard, &m[off..]);
        if escaped(fmt, &t) {
            continue;
        }
        let block = i as u64;
        if checks.guard && t.guard != g {
            return Err(PiError::Guard(block));
        }
        if checks.app && (t.app ^ tags.lbat) & tags.lbatm != 0 {
            return Err(PiError::App(block));
        }
        // Type 3 has no reference tag to check (the command was refused
        // before with the ref check asked).
        if checks.reftag && fmt.pi != 3 && t.reftag != tags.ilbrt.wrapping_add(block) & mask {
            return Err(PiError::Ref(block));
        }
    }
    Ok(())
}

/// Inserts PI (PRACT=1) into `md` for blocks with `guards`: app tag LBAT,
/// reference tag ILBRT plus the block index (types 1 and 2) or ILBRT
/// (type 3).
pub fn generate(fmt: Format, guards: &[u64], md: &mut [u8], tags: Tags) {
    let ms = usize::from(fmt.ms);
    let off = fmt.pi_offset();
    let mask = ref_mask(fmt.guard);
    assert!(
        md.len() / ms >= guards.len(),
        "metadata shorter than the blocks"
    );
    for (i, (&g, m)) in guards.iter().zip(md.chunks_mut(ms)).enumerate() {
        let reftag = if fmt.pi == 3 {
            tags.ilbrt & mask
        } else {
            tags.ilbrt.wrapping_add(i as u64) & mask
        };
        tuple::write(
            fmt.guard,
            &mut m[off..],
            Tuple {
                guard: g,
                app: tags.lbat,
                reftag,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::crc::reference;
    use super::*;

    fn fmt(ms: u16, pi: u8, first: bool, guard: Guard) -> Format {
        Format {
            ms,
            extended: false,
            pi,
            first,
            guard,
        }
    }

    /// Independent expectation: the tuple a host computes by hand, from the
    /// reference CRCs, at the offset the spec names.
    fn host_tuple(f: Format, block: &[u8], md: &mut [u8], app: u16, reftag: u64) {
        let off = if f.first {
            0
        } else {
            f.ms as usize - f.pi_size()
        };
        let mut covered = block.to_vec();
        covered.extend_from_slice(&md[..off]);
        match f.guard {
            Guard::Crc16 => {
                md[off..off + 2].copy_from_slice(&reference::crc16(&covered).to_be_bytes());
                md[off + 2..off + 4].copy_from_slice(&app.to_be_bytes());
                md[off + 4..off + 8].copy_from_slice(&(reftag as u32).to_be_bytes());
            }
            Guard::Crc64 => {
                md[off..off + 8].copy_from_slice(&reference::crc64(&covered).to_be_bytes());
                md[off + 8..off + 10].copy_from_slice(&app.to_be_bytes());
                md[off + 10..off + 16].copy_from_slice(&reftag.to_be_bytes()[2..]);
            }
        }
    }

    const ALL: Checks = Checks {
        guard: true,
        app: true,
        reftag: true,
    };

    #[test]
    fn generate_writes_what_a_host_computes_for_every_layout() {
        let lbs = 512;
        let data: Vec<u8> = (0..4 * lbs).map(|i| (i * 7 + 3) as u8).collect();
        for (ms, guard) in [
            (8u16, Guard::Crc16),
            (16, Guard::Crc16),
            (16, Guard::Crc64),
            (64, Guard::Crc64),
        ] {
            for first in [false, true] {
                for pi in 1..=3u8 {
                    let f = fmt(ms, pi, first, guard);
                    let msz = ms as usize;
                    // Pieces split mid-block, as PRP pages do; and one
                    // contiguous piece (the fast path).
                    let split = [&data[..100], &data[100..1500], &data[1500..]];
                    for pieces in [&split[..], &[&data[..]]] {
                        // Non-PI metadata bytes the host put there.
                        let mut md: Vec<u8> = (0..4 * msz).map(|i| (i * 13) as u8).collect();
                        let mut want = md.clone();
                        for b in 0..4 {
                            let r = if pi == 3 { 100 } else { 100 + b as u64 };
                            host_tuple(
                                f,
                                &data[b * lbs..(b + 1) * lbs],
                                &mut want[b * msz..(b + 1) * msz],
                                0x5A5A,
                                r,
                            );
                        }
                        let mut g = Vec::new();
                        guards(f, lbs, pieces, &md, &mut g);
                        let tags = Tags {
                            ilbrt: 100,
                            lbat: 0x5A5A,
                            lbatm: 0xFFFF,
                        };
                        generate(f, &g, &mut md, tags);
                        assert_eq!(md, want, "{f:?}");
                        assert_eq!(check(f, &g, &md, ALL, tags), Ok(()), "{f:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn each_check_fails_on_its_field_and_escapes_skip() {
        let lbs = 512;
        let data = vec![0x42u8; 2 * lbs];
        for guard in [Guard::Crc16, Guard::Crc64] {
            let f = fmt(16, 1, true, guard);
            let mut md = vec![0u8; 32];
            let tags = Tags {
                ilbrt: 7,
                lbat: 0x00F0,
                lbatm: 0x00FF,
            };
            for b in 0..2 {
                host_tuple(
                    f,
                    &data[b * lbs..(b + 1) * lbs],
                    &mut md[b * 16..(b + 1) * 16],
                    0x00F0,
                    7 + b as u64,
                );
            }
            let mut g = Vec::new();
            guards(f, lbs, &[&data], &md, &mut g);
            assert_eq!(check(f, &g, &md, ALL, tags), Ok(()));
            let gl = tuple::last_byte(guard, tuple::Field::Guard);
            let al = tuple::last_byte(guard, tuple::Field::App);
            let rl = tuple::last_byte(guard, tuple::Field::Ref);
            let mut bad = md.clone();
            bad[16 + gl] ^= 1;
            assert_eq!(check(f, &g, &bad, ALL, tags), Err(PiError::Guard(1)));
            assert_eq!(
                check(
                    f,
                    &g,
                    &bad,
                    Checks {
                        guard: false,
                        ..ALL
                    },
                    tags
                ),
                Ok(())
            );
            let mut bad = md.clone();
            bad[al] ^= 1;
            assert_eq!(check(f, &g, &bad, ALL, tags), Err(PiError::App(0)));
            // A bit outside LBATM is not compared.
            let mut masked = md.clone();
            masked[al - 1] ^= 0x80;
            assert_eq!(check(f, &g, &masked, ALL, tags), Ok(()));
            let mut bad = md.clone();
            bad[16 + rl] ^= 1;
            assert_eq!(check(f, &g, &bad, ALL, tags), Err(PiError::Ref(1)));
            assert_eq!(
                check(
                    f,
                    &g,
                    &bad,
                    Checks {
                        reftag: false,
                        ..ALL
                    },
                    tags
                ),
                Ok(())
            );
            // App tag FFFFh escapes types 1 and 2, whatever else is wrong.
            let mut esc = md.clone();
            esc[16 + gl] ^= 1;
            esc[16 + al - 1] = 0xFF;
            esc[16 + al] = 0xFF;
            assert_eq!(check(f, &g, &esc, ALL, tags), Ok(()));
            // Type 3 needs the reference tag all ones too.
            let t3 = fmt(16, 3, true, guard);
            assert_eq!(check(t3, &g, &esc, ALL, tags), Err(PiError::Guard(1)));
            let rw = if guard == Guard::Crc16 { 4 } else { 6 };
            for k in 0..rw {
                esc[16 + rl - k] = 0xFF;
            }
            assert_eq!(check(t3, &g, &esc, ALL, tags), Ok(()));
        }
    }

    #[test]
    fn reference_tags_wrap_at_their_width() {
        let f16 = fmt(8, 1, false, Guard::Crc16);
        let f64 = fmt(16, 2, false, Guard::Crc64);
        let g = vec![0u64; 2];
        let mut md = vec![0u8; 16];
        generate(
            f16,
            &g,
            &mut md,
            Tags {
                ilbrt: 0xFFFF_FFFF,
                ..Tags::default()
            },
        );
        assert_eq!(&md[4..8], &[0xFF; 4]);
        assert_eq!(&md[12..16], &[0; 4], "32-bit tag wraps to 0");
        let mut md = vec![0u8; 32];
        generate(
            f64,
            &g,
            &mut md,
            Tags {
                ilbrt: 0xFFFF_FFFF_FFFF,
                ..Tags::default()
            },
        );
        assert_eq!(&md[26..32], &[0; 6], "48-bit tag wraps to 0");
    }
}
