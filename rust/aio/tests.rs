//! Both I/O paths against a plain file: what was written is read back,
//! errors come back as negated errnos, and tags come back once each.

use super::*;
use std::os::fd::AsRawFd;

fn path_roundtrip(path: IoPath) {
    let name = format!(
        "/dev/shm/nvmefast-aio-{}-{}",
        std::process::id(),
        path.name()
    );
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&name)
        .unwrap();
    f.set_len(1 << 20).unwrap();
    let mut aio = Aio::new(path, 64).unwrap();
    let bufs: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i + 1; 4096]).collect();
    let iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: b.len(),
        })
        .collect();
    for (i, v) in iovs.iter().enumerate() {
        // SAFETY: bufs and iovs outlive the reaping below.
        assert!(unsafe {
            aio.push(Request {
                fd: f.as_raw_fd(),
                kind: Kind::Write { flags: 0 },
                offset: i as u64 * 4096,
                iov: v,
                iovcnt: 1,
                tag: i as u64,
            })
        });
    }
    aio.submit();
    let mut done = Vec::new();
    while done.len() < 32 {
        aio.reap(&mut done);
        if done.len() < 32 {
            aio.wait();
        }
    }
    done.sort_by_key(|c| c.tag);
    for (i, c) in done.iter().enumerate() {
        assert_eq!(
            *c,
            Completion {
                tag: i as u64,
                res: 4096
            }
        );
    }
    let mut back = vec![0u8; 4096 * 2];
    let two = [
        libc::iovec {
            iov_base: back.as_mut_ptr().cast(),
            iov_len: 4096,
        },
        // SAFETY: inside back.
        libc::iovec {
            iov_base: unsafe { back.as_mut_ptr().add(4096) }.cast(),
            iov_len: 4096,
        },
    ];
    // SAFETY: back outlives the reap.
    unsafe {
        assert!(aio.push(Request {
            fd: f.as_raw_fd(),
            kind: Kind::Read,
            offset: 4096 * 3,
            iov: two.as_ptr(),
            iovcnt: 2,
            tag: 77,
        }));
        assert!(aio.push(Request {
            fd: -1,
            kind: Kind::Datasync,
            offset: 0,
            iov: std::ptr::null(),
            iovcnt: 0,
            tag: 78,
        }));
    }
    aio.submit();
    let mut done = Vec::new();
    while done.len() < 2 {
        aio.reap(&mut done);
        if done.len() < 2 {
            aio.wait();
        }
    }
    done.sort_by_key(|c| c.tag);
    assert_eq!(done[0], Completion { tag: 77, res: 8192 });
    assert_eq!(
        done[1],
        Completion {
            tag: 78,
            res: -libc::EBADF
        }
    );
    assert!(back[..4096].iter().all(|&b| b == 4) && back[4096..].iter().all(|&b| b == 5));
    drop(aio);
    let _ = std::fs::remove_file(&name);
}

#[test]
fn io_uring_roundtrip() {
    if choose(Choice::IoUring, true).is_err() {
        eprintln!("io_uring unavailable here: skipped");
        return;
    }
    path_roundtrip(IoPath::IoUring);
}

#[test]
fn threads_roundtrip() {
    path_roundtrip(IoPath::Threads);
}

#[test]
fn transfer_all_reports_end_of_file_as_eio() {
    let name = format!("/dev/shm/nvmefast-aio-eof-{}", std::process::id());
    std::fs::write(&name, [1u8; 100]).unwrap();
    let f = std::fs::File::open(&name).unwrap();
    let mut buf = [0u8; 200];
    let iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 200,
    }];
    // SAFETY: buf is valid for 200 bytes.
    let r = unsafe { transfer_all(f.as_raw_fd(), false, 0, &iov, 0) };
    assert_eq!(r, Err(libc::EIO));
    assert!(buf[..100].iter().all(|&b| b == 1));
    let _ = std::fs::remove_file(&name);
}
