//! Guard pages around the engine's own mapping of a guest memory fd, so a
//! device access past a region's end faults (libFuzzer reports the SIGSEGV)
//! instead of silently reading or writing a neighbouring mapping.
//!
//! The engine maps each DMA region at a kernel-chosen address. The harness
//! reserves `len` plus a page on each side as PROT_NONE, frees the middle and
//! maps the region at once: the kernel's top-down search usually reuses that
//! exact hole. `/proc/self/maps` (found by the memfd's name) tells whether it
//! did; if not, the region is unmapped and the dance retried.

use std::fs;

const PAGE: usize = 4096;

/// Where the engine's mapping landed and whether it is fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarded {
    pub start: usize,
    pub end: usize,
    /// PROT_NONE pages sit directly below `start` and above `end`.
    pub fenced: bool,
}

/// Mappings of the memfd called `name`, except the one starting at `except`
/// (the harness's own view of the fd).
fn mappings_of(name: &str, except: usize) -> Vec<(usize, usize)> {
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let tag = format!("/memfd:{name} ");
    maps.lines()
        .filter(|l| l.contains(&tag))
        .filter_map(|l| {
            let (s, e) = l.split_once(' ')?.0.split_once('-')?;
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        })
        .filter(|&(s, _)| s != except)
        .collect()
}

/// Calls `map` so that the engine's new mapping of the memfd `name` (`len`
/// bytes) has guard pages on both sides, retrying through `unmap`; after
/// eight misses it maps without guards and says so.
pub fn map_guarded(
    name: &str,
    except: usize,
    len: usize,
    mut map: impl FnMut(),
    mut unmap: impl FnMut(),
) -> Guarded {
    let total = len.checked_add(2 * PAGE).expect("region size");
    for _ in 0..8 {
        // SAFETY: a fresh anonymous PROT_NONE reservation at a
        // kernel-chosen address; nothing else refers to it.
        let x = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(x, libc::MAP_FAILED, "guard reservation");
        let x = x as usize;
        let hole = x + PAGE;
        // SAFETY: [hole, hole+len) is inside the reservation made above.
        unsafe { libc::munmap(hole as *mut libc::c_void, len) };
        map();
        let found = mappings_of(name, except);
        if found.contains(&(hole, hole + len)) {
            return Guarded {
                start: hole,
                end: hole + len,
                fenced: true,
            };
        }
        unmap();
        // SAFETY: the two guard pages are what is left of our reservation.
        unsafe {
            libc::munmap(x as *mut libc::c_void, PAGE);
            libc::munmap((hole + len) as *mut libc::c_void, PAGE);
        }
    }
    map();
    let (start, end) = mappings_of(name, except).first().copied().unwrap_or((0, 0));
    Guarded {
        start,
        end,
        fenced: false,
    }
}

/// Frees the guard pages of a mapping `map_guarded` fenced, once the
/// engine has unmapped it (a harness that maps regions per input would
/// otherwise leak two mappings each time, up to `vm.max_map_count`).
pub fn release(g: &Guarded) {
    if !g.fenced {
        return;
    }
    // SAFETY: the PROT_NONE pages directly around the mapping are what is
    // left of map_guarded's reservation, ours alone.
    unsafe {
        libc::munmap((g.start - PAGE) as *mut libc::c_void, PAGE);
        libc::munmap(g.end as *mut libc::c_void, PAGE);
    }
}
