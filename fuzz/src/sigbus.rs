//! A SIGBUS handler of the rig's own, standing where libFuzzer's (or any
//! other library's) stands, to check nvmefast's SIGBUS guard from the side
//! of the handler it chains to (`nvmefast::mem::guard`):
//!
//! - it is installed before the engine's first guarded mapping, so the
//!   guard chains to it, and it chains on to the disposition it found
//!   (libFuzzer's crash handler under libFuzzer, Rust's or the default under
//!   `cargo test`);
//! - loss inputs put it back on top of the guard before mapping their
//!   region, as a library installing its handler late would; the guard
//!   must go back on top at that mapping (checked by [`on_top`]);
//! - a fault in the decoy (a truncated memfd mapping that is not guest
//!   memory) must reach it through the guard: it replaces the decoy with a
//!   zero page and counts the fault ([`touch_decoy`]);
//! - a fault in guest memory must never reach it: it says so on stderr and
//!   passes it on, which ends the process (a libFuzzer crash report).
//!
//! Async-signal safety: the handler uses atomics and raw syscalls only.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

const PAGE: usize = 4096;

/// The disposition in force when the probe was first installed (leaked:
/// the handler may read it at any time). Null until then.
static NEXT: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
/// The decoy mapping, one page (0: none).
static DECOY: AtomicUsize = AtomicUsize::new(0);
/// Faults the probe caught in the decoy.
static DECOY_FAULTS: AtomicU64 = AtomicU64::new(0);
/// Guest faults that reached the probe (the guard handed them on).
static GUEST_FAULTS: AtomicU64 = AtomicU64::new(0);
/// The engine's guest memory mappings, as (start, end) pairs (0, 0: free).
static GUEST: [(AtomicUsize, AtomicUsize); GUEST_SLOTS] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; GUEST_SLOTS];
/// Slots of [`GUEST`]: A, B, D and one loss input's E.
pub const GUEST_SLOTS: usize = 4;
/// Serialises installation and the decoy.
static LOCK: Mutex<()> = Mutex::new(());

fn handler() -> libc::sighandler_t {
    on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t
}

/// The SIGBUS disposition in force.
fn current() -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid value.
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `cur`.
    let r = unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) };
    assert_eq!(r, 0, "sigaction: {}", std::io::Error::last_os_error());
    cur
}

/// Makes the probe the SIGBUS disposition. The first call keeps the one it
/// replaces as the one to chain to; later calls drop what they replace
/// (the guard, which chains to the probe already).
pub fn install() {
    let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if NEXT.load(Ordering::Acquire).is_null() {
        // Published before the probe is in force, so it always finds it.
        NEXT.store(Box::into_raw(Box::new(current())), Ordering::Release);
    }
    // SAFETY: an all-zero sigaction is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler();
    // As libFuzzer installs its own: SA_SIGINFO, SA_ONSTACK.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: sa_mask is a valid sigset_t to fill.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: `sa` is a valid action with an SA_SIGINFO handler.
    let r = unsafe { libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) };
    assert_eq!(r, 0, "sigaction: {}", std::io::Error::last_os_error());
}

/// True when the probe, not the guard, is the SIGBUS disposition in force.
pub fn on_top() -> bool {
    current().sa_sigaction == handler()
}

/// Records guest memory mapping `slot` as `[start, end)` (0, 0: none).
pub fn set_guest(slot: usize, start: usize, end: usize) {
    let (s, e) = &GUEST[slot];
    // Cleared first: the handler never sees a new start with an old end.
    e.store(0, Ordering::SeqCst);
    s.store(start, Ordering::SeqCst);
    e.store(end, Ordering::SeqCst);
}

/// Guest faults that reached the probe since the process started.
pub fn guest_faults() -> u64 {
    GUEST_FAULTS.load(Ordering::SeqCst)
}

/// A shared mapping of one page of an empty memfd: touching it raises
/// SIGBUS, and it is nobody's guest memory.
fn truncated_page() -> usize {
    // SAFETY: memfd_create with a valid C string; we own the result.
    let fd = unsafe { libc::memfd_create(c"nvmefast-fuzz-decoy".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh shared mapping at a kernel-chosen address of our own
    // (empty) memfd; mmap does not look at the file size.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    // SAFETY: our own fd; the mapping keeps the file alive.
    unsafe { libc::close(fd) };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    p as usize
}

/// Touches the decoy: a SIGBUS outside guest memory, which the guard must
/// hand to the probe (and not take for a guest fault). Returns how many
/// faults the probe caught in it: 1 when the chain holds.
pub fn touch_decoy() -> u64 {
    let _l = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let page = truncated_page();
    let before = DECOY_FAULTS.load(Ordering::SeqCst);
    DECOY.store(page, Ordering::SeqCst);
    // SAFETY: `page` is our own mapping; the read faults (the file is
    // empty) until the probe puts a zero page there, then reads 0.
    let v = unsafe { std::ptr::read_volatile(page as *const u8) };
    DECOY.store(0, Ordering::SeqCst);
    // SAFETY: the mapping made above (a zero page by now), used by nobody.
    unsafe { libc::munmap(page as *mut libc::c_void, PAGE) };
    assert_eq!(v, 0, "the decoy read something other than the zero page");
    DECOY_FAULTS.load(Ordering::SeqCst) - before
}

/// Touches a truncated mapping that is neither guest memory nor the decoy:
/// the probe passes the SIGBUS on, so the process ends the way it would
/// without nvmefast (under libFuzzer: its crash report). For the test that
/// the guard chains to libFuzzer's handler.
pub fn touch_stray() -> u8 {
    let page = truncated_page();
    // SAFETY: our own mapping; the read faults and nobody handles it.
    unsafe { std::ptr::read_volatile(page as *const u8) }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO); si_addr is
    // meaningful for a kernel-raised SIGBUS (si_code > 0).
    let addr = unsafe {
        match info.as_ref() {
            Some(i) if i.si_code > 0 => Some(i.si_addr() as usize),
            _ => None,
        }
    };
    if let Some(addr) = addr {
        let decoy = DECOY.load(Ordering::SeqCst);
        if decoy != 0 && addr.wrapping_sub(decoy) < PAGE {
            DECOY_FAULTS.fetch_add(1, Ordering::SeqCst);
            // SAFETY: replaces exactly the decoy page, our own mapping,
            // with a private zero page; the access then repeats and reads 0.
            unsafe {
                libc::syscall(
                    libc::SYS_mmap,
                    decoy,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1 as libc::c_int,
                    0 as libc::off_t,
                )
            };
            return;
        }
        let guest = GUEST.iter().any(|(s, e)| {
            let (s, e) = (s.load(Ordering::SeqCst), e.load(Ordering::SeqCst));
            s <= addr && addr < e
        });
        if guest {
            GUEST_FAULTS.fetch_add(1, Ordering::SeqCst);
            let msg = b"sqe: a SIGBUS in guest memory reached the handler below the guard\n";
            // SAFETY: write(2) is async-signal-safe; msg is a valid buffer.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        }
    }
    // SAFETY: the arguments are the kernel's.
    unsafe { chain(sig, info, ctx) };
}

/// Passes a SIGBUS the probe does not handle to the disposition it found.
///
/// # Safety
/// The arguments are those the kernel passed to the handler.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let next = NEXT.load(Ordering::Acquire);
    // SAFETY: NEXT is null or a leaked, never-freed sigaction.
    let handler = unsafe { next.as_ref() }.map_or(libc::SIG_DFL, |n| n.sa_sigaction);
    match handler {
        libc::SIG_DFL | libc::SIG_IGN => {
            // The default action: a fault repeats once we return and ends
            // the process; a sent signal is raised again.
            // SAFETY: a zeroed sigaction is SIG_DFL; sigaction and raise
            // are async-signal-safe.
            unsafe {
                let dfl: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
                if info.as_ref().is_none_or(|i| i.si_code <= 0) {
                    libc::raise(sig);
                }
            }
        }
        // SAFETY: `next` is non-null here (a handler other than SIG_DFL).
        h if unsafe { (*next).sa_flags } & libc::SA_SIGINFO != 0 => {
            // SAFETY: an SA_SIGINFO handler has this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(h) };
            f(sig, info, ctx);
        }
        h => {
            // SAFETY: a plain handler has this signature.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
            f(sig);
        }
    }
}
