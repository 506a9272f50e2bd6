//! The floors: raw primitives measured in the same run as a benchmark, so a
//! result can be read as a ratio on a noisy machine.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn efd_write(fd: i32) {
    let one: u64 = 1;
    // SAFETY: 8-byte write from a valid u64.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn efd_read(fd: i32) {
    let mut v: u64 = 0;
    // SAFETY: 8-byte read into a valid u64 (blocking eventfd).
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Mean round trip (ns) of two threads bouncing through two blocking eventfds.
pub fn eventfd_pingpong(iterations: u32) -> f64 {
    let a = Arc::new(eventfd());
    let b = Arc::new(eventfd());
    let (a2, b2) = (a.clone(), b.clone());
    let t = std::thread::spawn(move || {
        for _ in 0..iterations {
            efd_read(a2.as_raw_fd());
            efd_write(b2.as_raw_fd());
        }
    });
    // Warm-up round trip, not timed.
    let start = Instant::now();
    for _ in 0..iterations {
        efd_write(a.as_raw_fd());
        efd_read(b.as_raw_fd());
    }
    let el = start.elapsed();
    let _ = t.join();
    el.as_nanos() as f64 / f64::from(iterations.max(1))
}

/// Mean round trip (ns) of two spinning threads bouncing one shared counter.
pub fn shm_pingpong(iterations: u32) -> f64 {
    let flag = Arc::new(AtomicU64::new(0));
    let f2 = flag.clone();
    let n = u64::from(iterations);
    let t = std::thread::spawn(move || {
        for i in 0..n {
            while f2.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
            f2.store(2 * i + 2, Ordering::Release);
        }
    });
    let start = Instant::now();
    for i in 0..n {
        flag.store(2 * i + 1, Ordering::Release);
        while flag.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let el = start.elapsed();
    let _ = t.join();
    el.as_nanos() as f64 / f64::from(iterations.max(1))
}

/// Random 4 KiB memcpys per second out of a touched buffer of `bytes`, into
/// 64 rotating destination buffers (as RAM-backed reads into a queue's
/// worth of I/O buffers do).
pub fn memcpy_4k(bytes: usize, seconds: f64) -> f64 {
    let bytes = bytes.max(1 << 20) & !4095;
    let src = vec![0x5au8; bytes];
    let mut dst = vec![0u8; 64 * 4096];
    let pages = (bytes / 4096) as u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n: u64 = 0;
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    loop {
        for _ in 0..256 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let page = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % pages) as usize;
            let d = (n % 64) as usize * 4096;
            dst[d..d + 4096].copy_from_slice(&src[page * 4096..page * 4096 + 4096]);
            n += 1;
        }
        if start.elapsed() >= limit {
            break;
        }
    }
    std::hint::black_box(&dst);
    n as f64 / start.elapsed().as_secs_f64()
}
