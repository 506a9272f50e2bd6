//! The blocks Write Uncorrectable marked (NVM Command Set 1.0, 3.3.7):
//! each reads back as Unrecovered Read Error until it is written, zeroed,
//! deallocated, formatted or sanitized.
//!
//! A namespace with no mark pays one load per command that reads or writes
//! blocks (`any`); the ranges themselves sit under a lock the hot path
//! takes only while some block is marked. A file namespace keeps its marks
//! beside the image (`disk.img.uncor`, as the zone and metadata
//! companions), written at the data's durability points: a Flush, a FUA
//! write, every change while the volatile write cache is off, and an
//! orderly close. The file is replaced whole (written to a temporary name,
//! synced, renamed): the marks are a handful of ranges, not a stream.
//!
//! Layout (little endian): magic `NVMEFAST-UNCOR\0\0`, version (u32),
//! range count (u32), an FNV-1a checksum (u64) of the ranges, then one
//! (SLBA, NLB) pair of u64 per range, in LBA order.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

const MAGIC: &[u8; 16] = b"NVMEFAST-UNCOR\0\0";
const VERSION: u32 = 1;
const HEADER: usize = 32;
/// The most marked ranges a namespace keeps (guest memory is the guest's to
/// spend, host memory is not): a Write Uncorrectable that would make more
/// fails with Capacity Exceeded; a companion with more is not one we wrote.
const MAX_RANGES: u64 = if cfg!(test) { 64 } else { 1 << 24 };

/// The companion of image `image`: `image.uncor`.
pub fn companion_path(image: &str) -> String {
    format!("{image}.uncor")
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Default)]
struct Inner {
    /// Marked ranges: first LBA -> one past the last, disjoint and not
    /// touching (neighbours are merged).
    ranges: BTreeMap<u64, u64>,
    /// Changed since the companion was last written.
    dirty: bool,
    /// The companion of a file namespace (None: memory only).
    file: Option<String>,
}

/// A namespace's marked blocks (see the module documentation).
#[derive(Default)]
pub struct Uncorrectable {
    /// Some block is marked.
    any: AtomicBool,
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Uncorrectable {
    /// True when some block is marked (the hot path's one load).
    #[inline]
    pub fn any(&self) -> bool {
        // Acquire pairs with the Release in `publish`: a command that
        // sees it set sees the ranges behind it (it takes the lock anyway).
        self.any.load(Ordering::Acquire)
    }

    fn publish(&self, inner: &Inner) {
        self.any.store(!inner.ranges.is_empty(), Ordering::Release);
    }

    /// The first marked LBA in `[slba, slba + nlb)`, if any.
    #[inline]
    pub fn first_marked(&self, slba: u64, nlb: u64) -> Option<u64> {
        if !self.any() || nlb == 0 {
            return None;
        }
        let end = slba.saturating_add(nlb);
        let inner = lock(&self.inner);
        if let Some((_, &e)) = inner.ranges.range(..=slba).next_back() {
            if e > slba {
                return Some(slba);
            }
        }
        inner
            .ranges
            .range(slba.saturating_add(1)..end)
            .next()
            .map(|(&s, _)| s)
    }

    /// Marks `[slba, slba + nlb)`; `durable`: written to the companion now.
    pub fn mark(&self, slba: u64, nlb: u64, durable: bool) -> Result<(), i32> {
        if nlb == 0 {
            return Ok(());
        }
        let mut inner = lock(&self.inner);
        let (mut start, mut end) = (slba, slba.saturating_add(nlb));
        // Swallow every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = inner
            .ranges
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        if inner.ranges.len() - touching.len() >= MAX_RANGES as usize {
            return Err(libc::ENOSPC);
        }
        for (s, e) in touching {
            inner.ranges.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        inner.ranges.insert(start, end);
        inner.dirty = true;
        self.publish(&inner);
        if durable {
            return Self::write_companion(&mut inner);
        }
        Ok(())
    }

    /// Unmarks `[slba, slba + nlb)` (written, zeroed, deallocated);
    /// `durable` as for [`Uncorrectable::mark`].
    #[inline]
    pub fn clear(&self, slba: u64, nlb: u64, durable: bool) -> Result<(), i32> {
        if !self.any() {
            return Ok(());
        }
        self.clear_slow(slba, slba.saturating_add(nlb), durable)
    }

    #[cold]
    fn clear_slow(&self, start: u64, end: u64, durable: bool) -> Result<(), i32> {
        let mut inner = lock(&self.inner);
        let hit: Vec<(u64, u64)> = inner
            .ranges
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        for (s, e) in hit {
            inner.ranges.remove(&s);
            if s < start {
                inner.ranges.insert(s, start);
            }
            // A write inside a marked range splits it; at the limit the
            // part above the write is let go (it reads back as the backend
            // holds it) rather than growing past what a companion keeps.
            if e > end && (inner.ranges.len() as u64) < MAX_RANGES {
                inner.ranges.insert(end, e);
            }
        }
        inner.dirty = true;
        self.publish(&inner);
        if durable {
            return Self::write_companion(&mut inner);
        }
        Ok(())
    }

    /// Unmarks every block (Format NVM, Sanitize).
    pub fn clear_all(&self) {
        let mut inner = lock(&self.inner);
        if !inner.ranges.is_empty() {
            inner.ranges.clear();
            inner.dirty = true;
        }
        self.publish(&inner);
        // Format and Sanitize are durable when they complete.
        let _ = Self::write_companion(&mut inner);
    }

    /// The marked ranges as (SLBA, NLB), in LBA order.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        lock(&self.inner)
            .ranges
            .iter()
            .map(|(&s, &e)| (s, e - s))
            .collect()
    }

    /// Keeps the marks in `path` (a file namespace of `lbas` blocks):
    /// loads what it holds. Err says what to change.
    pub fn open(&self, path: &str, lbas: u64) -> Result<(), String> {
        let mut inner = lock(&self.inner);
        inner.file = Some(path.to_string());
        inner.ranges = load(path, lbas)?;
        inner.dirty = false;
        self.publish(&inner);
        Ok(())
    }

    /// Makes the marks durable if they changed (a Flush, a close).
    pub fn flush(&self) -> Result<(), i32> {
        let mut inner = lock(&self.inner);
        if !inner.dirty {
            return Ok(());
        }
        Self::write_companion(&mut inner)
    }

    fn write_companion(inner: &mut Inner) -> Result<(), i32> {
        let Some(path) = inner.file.clone() else {
            inner.dirty = false;
            return Ok(());
        };
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        if inner.ranges.is_empty() {
            // Nothing marked: no file left behind.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(errno(e)),
            }
            inner.dirty = false;
            return Ok(());
        }
        let mut body = Vec::with_capacity(inner.ranges.len() * 16);
        for (&s, &e) in &inner.ranges {
            body.extend_from_slice(&s.to_le_bytes());
            body.extend_from_slice(&(e - s).to_le_bytes());
        }
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(inner.ranges.len() as u32).to_le_bytes());
        head.extend_from_slice(&fnv(&body).to_le_bytes());
        let tmp = format!("{path}.tmp");
        let r = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&head)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(errno(e));
        }
        inner.dirty = false;
        Ok(())
    }

    /// Forgets the marks at and past LBA `lbas` (the namespace shrank).
    pub fn truncate(&self, lbas: u64) -> Result<(), i32> {
        let durable = true;
        self.clear(lbas, u64::MAX - lbas, durable)
    }
}

/// The ranges `path` holds (none when it does not exist).
fn load(path: &str, lbas: u64) -> Result<BTreeMap<u64, u64>, String> {
    let bad = |why: &str| {
        format!(
            "{path}: {why}; it is not a Write Uncorrectable record nvmefast wrote for this \
             namespace: remove it (the marked blocks then read back as written)"
        )
    };
    let raw = match std::fs::read(path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{path}: cannot be read: {e}")),
    };
    if raw.len() < HEADER || &raw[..16] != MAGIC {
        return Err(bad("no header"));
    }
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap_or_default());
    if word(16) != VERSION {
        return Err(bad("another version"));
    }
    let count = u64::from(word(20));
    let sum = u64::from_le_bytes(raw[24..32].try_into().unwrap_or_default());
    let body = &raw[HEADER..];
    if count > MAX_RANGES || body.len() as u64 != count * 16 || fnv(body) != sum {
        return Err(bad("torn or altered"));
    }
    let mut ranges = BTreeMap::new();
    let mut last_end = 0u64;
    for pair in body.chunks_exact(16) {
        let s = u64::from_le_bytes(pair[..8].try_into().unwrap_or_default());
        let n = u64::from_le_bytes(pair[8..].try_into().unwrap_or_default());
        let e = s.checked_add(n).ok_or_else(|| bad("a range overflows"))?;
        if n == 0 || s < last_end || e > lbas {
            return Err(bad(&format!(
                "a range ({s}, {n} blocks) is out of order or past the namespace's {lbas} blocks"
            )));
        }
        ranges.insert(s, e);
        last_end = e;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marks_are_bounded_by_what_a_companion_keeps() {
        let u = Uncorrectable::default();
        // Every other block: MAX_RANGES ranges, then no more.
        for i in 0..MAX_RANGES {
            u.mark(2 * i, 1, false).unwrap();
        }
        assert_eq!(u.mark(2 * MAX_RANGES, 1, false), Err(libc::ENOSPC));
        assert_eq!(
            u.ranges().len() as u64,
            MAX_RANGES,
            "a refused mark changes nothing"
        );
        // Merging into a neighbour adds no range, so it is still taken.
        u.mark(1, 1, false).unwrap(); // 0..3
        assert_eq!(u.ranges()[0], (0, 3));
        u.mark(2 * MAX_RANGES, 1, false).unwrap();
        // A write inside a range at the limit keeps the part below it and
        // lets the part above go, never growing past the limit.
        u.clear(1, 1, false).unwrap();
        assert_eq!(u.ranges()[0], (0, 1));
        assert_eq!(u.first_marked(2, 1), None);
        assert_eq!(u.ranges().len() as u64, MAX_RANGES);
    }

    #[test]
    fn marks_merge_split_and_report_the_first_marked_block() {
        let u = Uncorrectable::default();
        assert_eq!(u.first_marked(0, 1 << 40), None);
        u.mark(10, 5, false).unwrap(); // 10..15
        u.mark(15, 5, false).unwrap(); // touching: 10..20
        u.mark(30, 1, false).unwrap();
        assert_eq!(u.ranges(), vec![(10, 10), (30, 1)]);
        assert_eq!(u.first_marked(0, 10), None, "9 is the last block asked for");
        assert_eq!(u.first_marked(0, 11), Some(10));
        assert_eq!(u.first_marked(12, 100), Some(12));
        assert_eq!(
            u.first_marked(20, 10),
            None,
            "20..30 lies between the ranges"
        );
        assert_eq!(u.first_marked(20, 11), Some(30));
        u.clear(12, 3, false).unwrap(); // 10..12, 15..20
        assert_eq!(u.ranges(), vec![(10, 2), (15, 5), (30, 1)]);
        u.mark(5, 30, false).unwrap(); // 5..35 swallows all
        assert_eq!(u.ranges(), vec![(5, 30)]);
        u.truncate(20).unwrap();
        assert_eq!(u.ranges(), vec![(5, 15)]);
        u.clear_all();
        assert!(!u.any());
        assert_eq!(u.first_marked(0, u64::MAX), None);
    }

    #[test]
    fn a_companion_keeps_the_marks_and_goes_when_none_is_left() {
        let path = format!("/dev/shm/nvmefast-uncor-{}.img.uncor", std::process::id());
        let _ = std::fs::remove_file(&path);
        let u = Uncorrectable::default();
        u.open(&path, 1000).unwrap();
        u.mark(7, 2, false).unwrap();
        assert!(!std::path::Path::new(&path).exists(), "not durable yet");
        u.flush().unwrap();
        let again = Uncorrectable::default();
        again.open(&path, 1000).unwrap();
        assert_eq!(again.ranges(), vec![(7, 2)]);
        // Written for a larger namespace: refused, with the fix.
        let e = Uncorrectable::default().open(&path, 8).unwrap_err();
        assert!(
            e.contains("past the namespace") && e.contains("remove it"),
            "{e}"
        );
        again.clear(0, 100, true).unwrap();
        assert!(!std::path::Path::new(&path).exists());
        std::fs::write(&path, b"not ours").unwrap();
        let e = Uncorrectable::default().open(&path, 1000).unwrap_err();
        assert!(e.contains("no header"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}
