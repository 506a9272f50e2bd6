//! The floors: raw primitives measured in the same run as a benchmark, so a
//! result can be read as a ratio on a noisy machine.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Mean round trip (ns) of two threads bouncing through two blocking
/// eventfds: `iterations` round trips, or fewer if `max_seconds` run out
/// first (a loaded machine must not turn a floor into a hang).
pub fn eventfd_pingpong(iterations: u32, max_seconds: f64) -> f64 {
    let a = Arc::new(eventfd());
    let b = Arc::new(eventfd());
    let stop = Arc::new(AtomicBool::new(false));
    let (a2, b2, stop2) = (a.clone(), b.clone(), stop.clone());
    let t = std::thread::spawn(move || loop {
        efd_read(a2.as_raw_fd());
        if stop2.load(Ordering::Acquire) {
            return;
        }
        efd_write(b2.as_raw_fd());
    });
    let limit = Duration::from_secs_f64(max_seconds);
    let start = Instant::now();
    let mut done = 0u32;
    while done < iterations {
        efd_write(a.as_raw_fd());
        efd_read(b.as_raw_fd());
        done += 1;
        if done % 64 == 0 && start.elapsed() >= limit {
            break;
        }
    }
    let el = start.elapsed();
    // Release: the responder sees `stop` once it wakes from this last write.
    stop.store(true, Ordering::Release);
    efd_write(a.as_raw_fd());
    let _ = t.join();
    el.as_nanos() as f64 / f64::from(done.max(1))
}

/// Mean round trip (ns) of two spinning threads bouncing one shared counter,
/// bounded like [`eventfd_pingpong`]. Spinners yield now and then so that a
/// machine with fewer free cores than spinners still makes progress.
pub fn shm_pingpong(iterations: u32, max_seconds: f64) -> f64 {
    const STOP: u64 = u64::MAX;
    let flag = Arc::new(AtomicU64::new(0));
    let f2 = flag.clone();
    let spin = |n: &mut u32| {
        *n += 1;
        if *n % 1024 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    let t = std::thread::spawn(move || {
        let mut i = 0u64;
        let mut n = 0u32;
        loop {
            let v = f2.load(Ordering::Acquire);
            if v == STOP {
                return;
            }
            if v == 2 * i + 1 {
                f2.store(2 * i + 2, Ordering::Release);
                i += 1;
            } else {
                spin(&mut n);
            }
        }
    });
    let limit = Duration::from_secs_f64(max_seconds);
    let start = Instant::now();
    let mut done = 0u64;
    let mut n = 0u32;
    while done < u64::from(iterations) {
        flag.store(2 * done + 1, Ordering::Release);
        while flag.load(Ordering::Acquire) != 2 * done + 2 {
            spin(&mut n);
        }
        done += 1;
        if done % 1024 == 0 && start.elapsed() >= limit {
            break;
        }
    }
    let el = start.elapsed();
    flag.store(STOP, Ordering::Release);
    let _ = t.join();
    el.as_nanos() as f64 / done.max(1) as f64
}

/// Random 4 KiB memcpys per second out of a touched buffer of `bytes`, into
/// 64 rotating destination buffers (as RAM-backed reads into a queue's
/// worth of I/O buffers do). The source is memory of the kind a RAM
/// namespace holds (a [`RamBackend`](crate::backend::ram::RamBackend)
/// mapping, huge pages where the kernel gives them), so the floor measures
/// the copy the device does, not a TLB miss the device does not take.
pub fn memcpy_4k(bytes: usize, seconds: f64) -> f64 {
    let bytes = bytes.max(1 << 20) & !4095;
    let ram = crate::backend::ram::RamBackend::new(bytes as u64).expect("floor buffer");
    let fill = vec![0x5au8; 1 << 20];
    for off in (0..bytes).step_by(fill.len()) {
        let n = fill.len().min(bytes - off);
        // SAFETY: off + n <= bytes, the mapping's size; fill holds n bytes.
        unsafe { ram.write(off as u64, fill.as_ptr(), n) };
    }
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
            // SAFETY: page < pages, so the 4 KiB source is inside the
            // mapping; dst[d..d + 4096] is in bounds (d < 64 * 4096).
            unsafe { ram.read((page * 4096) as u64, dst[d..d + 4096].as_mut_ptr(), 4096) };
            n += 1;
        }
        if start.elapsed() >= limit {
            break;
        }
    }
    std::hint::black_box(&dst);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Mean round trip (ns) of a 16-byte request and a 16-byte reply between two
/// threads over a UNIX stream socket pair (blocking reads): the least a
/// vfio-user message that waits for its reply can cost. Bounded like
/// [`eventfd_pingpong`].
pub fn unix_socket_rtt(iterations: u32, max_seconds: f64) -> f64 {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let t = std::thread::spawn(move || {
        let mut m = [0u8; 16];
        while b.read_exact(&mut m).is_ok() {
            if m[0] == 0xff || b.write_all(&m).is_err() {
                return;
            }
        }
    });
    let limit = Duration::from_secs_f64(max_seconds);
    let start = Instant::now();
    let mut done = 0u32;
    let mut m = [0u8; 16];
    while done < iterations {
        a.write_all(&m).expect("request");
        a.read_exact(&mut m).expect("reply");
        done += 1;
        if done % 64 == 0 && start.elapsed() >= limit {
            break;
        }
    }
    let el = start.elapsed();
    m[0] = 0xff;
    let _ = a.write_all(&m);
    let _ = t.join();
    el.as_nanos() as f64 / f64::from(done.max(1))
}
