//! The SIGBUS guard: guest memory that shrinks under the device costs the
//! access an error, not the process.
//!
//! A shared mapping of a file raises SIGBUS when a page past the file's end
//! is touched, and whoever shares guest memory can `ftruncate` it at any
//! time (a vfio-user client, anything with the memory file). A memfd sealed
//! against shrinking (`F_SEAL_SHRINK`, as QEMU's memory-backend-memfd
//! seals it) cannot lose pages and is not guarded at all; every other
//! mapping is registered here while it is mapped.
//!
//! The handler acts only for a fault (kernel-raised SIGBUS) whose address
//! lies inside a registered mapping. It marks the region lost, bumps the
//! process-wide loss epoch, and replaces the whole mapping with anonymous
//! zero pages (one raw `mmap(MAP_FIXED)` syscall), then returns: the
//! faulting access repeats and completes harmlessly on zero memory. Nothing
//! unwinds or jumps over Rust frames. The code that accessed guest memory
//! compares the epoch with the one its memory snapshot was taken at, after
//! each sequence of guest accesses, and turns a loss into the access's
//! error (see `MemoryMap::lost`): this also catches a thread that read the
//! zero pages another thread's fault put there.
//!
//! Every other SIGBUS goes to the handler that was installed before ours
//! (Python's faulthandler, Rust's stack-overflow handler, another
//! library's), as if ours were not there; with none, the default action
//! ends the process as it would have without us.
//!
//! Async-signal safety: the handler uses atomics, raw syscalls and
//! `sigaction` only; no allocation, no lock, no thread-local storage (TLS
//! of a `dlopen`ed library may be allocated on first use), no logging. The
//! registry it reads is a linked list of fixed-size chunks that are never
//! freed; a slot is a seqlock, so a slot rewritten concurrently is skipped
//! (it cannot be the faulting mapping, which is held alive by the access).

use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::Mutex;

/// Slots per registry chunk.
const CHUNK: usize = 64;

/// One guarded mapping.
struct Slot {
    /// Seqlock sequence: odd while the slot is being written.
    seq: AtomicU64,
    base: AtomicUsize,
    /// 0: the slot is free.
    len: AtomicUsize,
    prot: AtomicI32,
    /// Set by the handler: the mapping lost pages and now holds zero pages.
    lost: AtomicBool,
    /// Faults the handler caught in this mapping.
    faults: AtomicU64,
    /// Owned by a `Guard` (written under `WRITER` only).
    used: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            prot: AtomicI32::new(0),
            lost: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            used: AtomicBool::new(false),
        }
    }

    /// Writes the mapping under the seqlock (callers hold `WRITER`).
    fn set(&self, base: usize, len: usize, prot: i32) {
        // Odd: readers skip the slot until the closing increment.
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.base.store(base, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.prot.store(prot, Ordering::Relaxed);
        self.lost.store(false, Ordering::Relaxed);
        self.faults.store(0, Ordering::Relaxed);
        // Release: a reader that sees the even value sees the fields above.
        self.seq.fetch_add(1, Ordering::Release);
    }
}

struct Chunk {
    slots: [Slot; CHUNK],
    /// The next chunk, once this one filled up (never freed).
    next: AtomicPtr<Chunk>,
}

impl Chunk {
    const fn new() -> Chunk {
        Chunk {
            slots: [const { Slot::new() }; CHUNK],
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

static FIRST: Chunk = Chunk::new();
/// Serialises registration, release and handler installation.
static WRITER: Mutex<()> = Mutex::new(());
/// Bumped by the handler for every fault it catches, after the region's
/// `lost` flag is set and before its zero pages appear.
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// The disposition in force before ours (leaked: the handler may read it
/// at any time). Null until installed.
static PREV: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
/// Thread id of a thread running the previous handler through ours (0:
/// none): a chained handler that re-raises SIGBUS lands in ours again, and
/// must then get the default action instead of itself (no loop).
static CHAINING: AtomicU64 = AtomicU64::new(0);

/// The loss epoch: changes whenever the handler caught a fault in guarded
/// memory. Acquire: a reader that sees a new value sees the `lost` flag the
/// handler set before it.
#[inline]
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// A registered mapping; dropping it unregisters it (before the mapping
/// is unmapped, so a fault at a reused address is never taken for ours).
pub struct Guard {
    slot: &'static Slot,
}

impl Guard {
    /// Registers `[base, base + len)` (mapped with `prot`), installing the
    /// handler when it is not in force.
    pub fn register(base: *mut libc::c_void, len: usize, prot: i32) -> Result<Guard, String> {
        let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
        install()?;
        let slot = free_slot();
        slot.used.store(true, Ordering::Relaxed);
        slot.set(base as usize, len, prot);
        Ok(Guard { slot })
    }

    /// True once the handler caught a fault in this mapping (it holds zero
    /// pages since).
    #[inline]
    pub fn lost(&self) -> bool {
        self.slot.lost.load(Ordering::Acquire)
    }

    /// Faults the handler caught in this mapping.
    pub fn faults(&self) -> u64 {
        self.slot.faults.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
        self.slot.set(0, 0, 0);
        self.slot.used.store(false, Ordering::Relaxed);
    }
}

/// A free slot, a new chunk's first when every chunk is full (`WRITER` held).
fn free_slot() -> &'static Slot {
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        if let Some(s) = chunk.slots.iter().find(|s| !s.used.load(Ordering::Relaxed)) {
            return s;
        }
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            let fresh: &'static Chunk = Box::leak(Box::new(Chunk::new()));
            // Release: the handler walking to it sees an initialised chunk.
            chunk
                .next
                .store(fresh as *const Chunk as *mut Chunk, Ordering::Release);
            return &fresh.slots[0];
        }
        // SAFETY: chunks are leaked, never freed: the pointer stays valid.
        chunk = unsafe { &*next };
    }
}

/// Guarded mappings registered now.
pub fn registered() -> usize {
    let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = 0;
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        n += chunk
            .slots
            .iter()
            .filter(|s| s.used.load(Ordering::Relaxed))
            .count();
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            return n;
        }
        // SAFETY: as in free_slot.
        chunk = unsafe { &*next };
    }
}

/// The guarded mapping holding `addr`, as (slot, base, len, prot).
/// Async-signal-safe: atomics only.
fn find(addr: usize) -> Option<(&'static Slot, usize, usize, i32)> {
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        for s in &chunk.slots {
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                continue;
            }
            let base = s.base.load(Ordering::Relaxed);
            let len = s.len.load(Ordering::Relaxed);
            let prot = s.prot.load(Ordering::Relaxed);
            // Acquire fence: the field loads above complete before the
            // sequence is read again (the seqlock read side).
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if len != 0 && addr.wrapping_sub(base) < len {
                return Some((s, base, len, prot));
            }
        }
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            return None;
        }
        // SAFETY: chunks are leaked, never freed.
        chunk = unsafe { &*next };
    }
}

/// Makes our handler the SIGBUS disposition, keeping the one in force as
/// the one to chain to. Runs at each registration (`WRITER` held): a
/// handler installed since ours (`faulthandler.enable()` later, or a
/// `faulthandler.disable()` that restored the default) is kept as the
/// previous one and ours goes back on top.
fn install() -> Result<(), String> {
    let ours = on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t;
    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags).
    let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action sigaction only reads the current one
    // into `cur`, a valid buffer.
    if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut cur) } != 0 {
        return Err(format!(
            "cannot read the SIGBUS disposition: {}",
            std::io::Error::last_os_error()
        ));
    }
    if cur.sa_sigaction == ours {
        return Ok(());
    }
    // Published before ours is in force, so the handler always finds it.
    PREV.store(saved(&cur), Ordering::Release);
    // SAFETY: an all-zero sigaction is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = ours;
    // SA_ONSTACK: a thread with an alternate stack (faulthandler gives the
    // main thread one) runs us there; one without runs us on its own stack,
    // which is fine: a truncated file is not a stack overflow, and the
    // handler needs a few hundred bytes. SA_NODEFER: a chained handler that
    // re-raises SIGBUS (faulthandler does) gets it delivered at once, as it
    // would installed alone.
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SAFETY: sa_mask is a valid sigset_t to fill.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: an all-zero sigaction is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `sa` is a valid action whose handler has the SA_SIGINFO
    // signature; `old` is a valid buffer.
    if unsafe { libc::sigaction(libc::SIGBUS, &sa, &mut old) } != 0 {
        return Err(format!(
            "cannot install the SIGBUS handler: {}",
            std::io::Error::last_os_error()
        ));
    }
    if old.sa_sigaction != cur.sa_sigaction && old.sa_sigaction != ours {
        // Someone installed a handler between our two calls: chain to it.
        PREV.store(saved(&old), Ordering::Release);
    }
    Ok(())
}

/// Dispositions saved to chain to, each once (`WRITER` held). Never freed:
/// the handler may be running one on another thread while a registration
/// replaces `PREV`, so a disposition in use can never be known unused.
/// Reusing an equal one keeps this bounded by the distinct dispositions the
/// process ever had, not by how often something replaced ours (a library
/// that re-installs its handler, `faulthandler.enable()` in a loop, a
/// fuzzer's harness: before, each time leaked one).
static SAVED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A never-freed copy of `sa` for `PREV`: an equal one saved before, or a
/// new one.
fn saved(sa: &libc::sigaction) -> *mut libc::sigaction {
    let mut all = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    for &p in all.iter() {
        let p = p as *mut libc::sigaction;
        // SAFETY: every entry is a leaked, never-freed sigaction.
        if same_action(unsafe { &*p }, sa) {
            return p;
        }
    }
    let p = Box::into_raw(Box::new(*sa));
    all.push(p as usize);
    p
}

/// True when `a` and `b` are the same disposition (handler, flags, mask).
fn same_action(a: &libc::sigaction, b: &libc::sigaction) -> bool {
    let bytes = |m: &libc::sigset_t| {
        // SAFETY: a sigset_t is plain bytes, read within its own size.
        unsafe {
            std::slice::from_raw_parts(
                (m as *const libc::sigset_t).cast::<u8>(),
                std::mem::size_of::<libc::sigset_t>(),
            )
            .to_vec()
        }
    };
    a.sa_sigaction == b.sa_sigaction
        && a.sa_flags == b.sa_flags
        && bytes(&a.sa_mask) == bytes(&b.sa_mask)
}

/// The SIGBUS handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno slot; the
    // syscalls below may change errno, which the interrupted code must not
    // see.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO).
    if !unsafe { catch(info) } {
        // SAFETY: as above; the arguments are the kernel's.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Handles a fault in guarded memory; false for any other SIGBUS.
///
/// # Safety
/// `info` is null or the siginfo the kernel passed to the handler.
unsafe fn catch(info: *mut libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: the caller's contract.
    let info = unsafe { &*info };
    // si_code <= 0: sent by kill/raise/sigqueue, not a fault.
    if info.si_code <= 0 {
        return false;
    }
    // SAFETY: a kernel-raised SIGBUS carries the faulting address.
    let addr = unsafe { info.si_addr() } as usize;
    let Some((slot, base, len, prot)) = find(addr) else {
        return false;
    };
    // The flag, then the epoch, then the zero pages: any thread that reads
    // a zero page (ours, retrying, or another) finds the epoch moved and the
    // flag set (SeqCst: one order for all three).
    slot.lost.store(true, Ordering::SeqCst);
    EPOCH.fetch_add(1, Ordering::SeqCst);
    slot.faults.fetch_add(1, Ordering::Relaxed);
    // SAFETY: [base, base + len) is a mapping the registry owns (it is
    // registered until unmapped, and the faulting access holds it mapped);
    // MAP_FIXED replaces exactly it with private zero pages of the same
    // protection, so it stays our address range for the later munmap.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mmap,
            base,
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1 as libc::c_int,
            0 as libc::off_t,
        )
    };
    // On failure (no memory for the mapping) the fault would repeat
    // forever: let the default action end the process instead.
    r as usize == base
}

/// Passes a SIGBUS that is not ours to the disposition in force before us.
///
/// # Safety
/// The arguments are those the kernel passed to the handler.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    let prev = PREV.load(Ordering::Acquire);
    if prev.is_null() || CHAINING.load(Ordering::Acquire) == me {
        // Nothing to chain to, or the previous handler re-raised into us.
        // SAFETY: the caller's contract.
        unsafe { default_action(sig, info) };
        return;
    }
    // SAFETY: PREV points to a leaked, never-freed sigaction.
    let prev = unsafe { &*prev };
    match prev.sa_sigaction {
        libc::SIG_DFL => {
            // SAFETY: the caller's contract.
            unsafe { default_action(sig, info) }
        }
        libc::SIG_IGN => {
            // A fault cannot be ignored (the kernel would force the default
            // action): the same here. A sent SIGBUS is ignored.
            // SAFETY: info is the kernel's siginfo, checked non-null.
            if !info.is_null() && unsafe { (*info).si_code } > 0 {
                // SAFETY: the caller's contract.
                unsafe { default_action(sig, info) }
            }
        }
        handler => {
            let took = CHAINING
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            if prev.sa_flags & libc::SA_RESETHAND != 0 {
                // SAFETY: resetting our own disposition, as the kernel
                // would have for that handler.
                unsafe { set_default(sig) };
            }
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: an SA_SIGINFO handler has this signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a plain handler has this signature.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                f(sig);
            }
            if took {
                CHAINING.store(0, Ordering::Release);
            }
        }
    }
}

/// Restores the default disposition of `sig`.
///
/// # Safety
/// Async-signal-safe; changes the process's disposition.
unsafe fn set_default(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
    let sa: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: sigaction is async-signal-safe; sa is valid.
    unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
}

/// The default action, as if no handler were installed: for a fault, the
/// access repeats once we return and the kernel ends the process; a sent
/// signal is raised again.
///
/// # Safety
/// As for [`chain`].
unsafe fn default_action(sig: libc::c_int, info: *mut libc::siginfo_t) {
    // SAFETY: the caller's contract.
    unsafe { set_default(sig) };
    // SAFETY: info is the kernel's siginfo, checked non-null first.
    if info.is_null() || unsafe { (*info).si_code } <= 0 {
        // SAFETY: raise is async-signal-safe; SA_NODEFER lets it through.
        unsafe { libc::raise(sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Address space nobody else can map: `len` bytes of PROT_NONE.
    fn reserve(len: usize) -> usize {
        // SAFETY: a fresh anonymous mapping chosen by the kernel.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize
    }

    #[test]
    fn slots_are_found_by_address_and_released() {
        let base = reserve(0x4000) + 0x1000;
        let a = Guard::register(base as *mut libc::c_void, 0x2000, libc::PROT_NONE).unwrap();
        let hit = find(base + 0x1fff).unwrap();
        assert!(std::ptr::eq(hit.0, a.slot));
        assert_eq!((hit.1, hit.2), (base, 0x2000));
        assert!(find(base + 0x2000).is_none_or(|(s, ..)| !std::ptr::eq(s, a.slot)));
        assert!(find(base - 1).is_none_or(|(s, ..)| !std::ptr::eq(s, a.slot)));
        let slot = a.slot;
        drop(a);
        assert!(find(base + 0x1000).is_none_or(|(s, ..)| !std::ptr::eq(s, slot)));
    }

    #[test]
    fn a_disposition_saved_again_is_not_copied_again() {
        extern "C" fn one(_: libc::c_int) {}
        extern "C" fn two(_: libc::c_int) {}
        let action = |h: extern "C" fn(libc::c_int), flags: libc::c_int| {
            // SAFETY: an all-zero sigaction is a valid value.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = h as libc::sighandler_t;
            sa.sa_flags = flags;
            sa
        };
        let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
        let a = saved(&action(one, 0));
        let n = SAVED.lock().unwrap().len();
        // The same disposition replaced ours again and again: one copy.
        for _ in 0..100 {
            assert_eq!(saved(&action(one, 0)), a);
        }
        assert_eq!(SAVED.lock().unwrap().len(), n);
        // Another handler, or the same with other flags, is another.
        let b = saved(&action(two, 0));
        let c = saved(&action(one, libc::SA_RESTART));
        assert!(b != a && c != a && b != c);
        // SAFETY: saved() returns leaked, never-freed copies.
        let copy = unsafe { &*c };
        assert_eq!(copy.sa_flags, libc::SA_RESTART);
    }

    #[test]
    fn the_registry_grows_past_a_chunk() {
        let n = CHUNK * 2 + 3;
        let base = reserve(n * 0x1000);
        let guards: Vec<Guard> = (0..n)
            .map(|i| {
                let at = (base + i * 0x1000) as *mut libc::c_void;
                Guard::register(at, 0x1000, libc::PROT_NONE).unwrap()
            })
            .collect();
        for (i, g) in guards.iter().enumerate() {
            let (s, ..) = find(base + i * 0x1000 + 5).unwrap();
            assert!(std::ptr::eq(s, g.slot), "mapping {i}");
        }
        assert!(registered() >= n);
    }
}
