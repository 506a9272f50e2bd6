//! File namespaces through the driver mock, on both I/O paths and both
//! cache modes: data lands in the file at the right offsets (read back with
//! plain `pread`), many commands are in flight at once, errors from the file
//! get the statuses the spec names, and stop, reset and Delete SQ wait for
//! what is in flight.

use super::*;
use crate::aio::Choice;
use crate::backend::{CacheMode, FileSpec};
use crate::cmd::io;
use crate::driver::{HostQueue, MockHost, Rng};
use crate::spec::opcode::io as op;
use crate::spec::Cqe;
use std::os::unix::fs::FileExt;
use std::time::Duration;

const SIZE: u64 = 4 << 20;

pub(super) fn file_engine(
    path: &str,
    size: u64,
    io: Choice,
    cache: CacheMode,
    readonly: bool,
) -> Result<Engine, EngineError> {
    Engine::new(EngineConfig {
        namespaces: vec![NamespaceSpec {
            size_bytes: size,
            lba_size: 512,
            backend: "file".into(),
            file: Some(FileSpec {
                path: path.into(),
                readonly,
                cache,
                io,
            }),
            ..NamespaceSpec::default()
        }],
        msix_vectors: 2,
        max_qid: 2,
        max_queue_entries: 256,
        mdts_bytes: 0,
        poll_us: 50,
        msix_embedder_managed: true,
        polling: Polling::Adaptive,
        iothreads: 1,
        affinity: Vec::new(),
        doorbell_stride: 4,
        nn: 0,
        capacity_bytes: 0,
    })
}

/// A fresh path in `dir` (removed on drop).
pub(super) struct TempPath(pub(super) String);

impl TempPath {
    pub(super) fn new(dir: &str, tag: &str) -> TempPath {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPath(format!(
            "{dir}/nvmefast-test-{}-{tag}-{n}.img",
            std::process::id()
        ))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn io_cmd(opcode: u8, cid: u16, slba: u64, nlb: u32, prp1: u64, prp2: u64) -> Sqe {
    let mut s = Sqe::new(opcode, cid, 1);
    s.set_prps(prp1, prp2);
    s.set_lba_range(slba, nlb);
    s
}

fn run(e: &Engine, q: &mut HostQueue, s: Sqe) -> Cqe {
    q.push(&s);
    q.ring_sq(e);
    let c = q.wait(Duration::from_secs(10)).expect("no completion");
    q.ring_cq(e);
    c
}

/// Writes random 4 KiB blocks at QD `qd` (all submitted before any is
/// reaped), checks the file holds them, then reads them back at QD `qd`
/// into poisoned buffers and checks every byte.
fn roundtrip(dir: &str, io: Choice, cache: CacheMode, qd: usize) {
    let p = TempPath::new(dir, "rt");
    let e = file_engine(&p.0, SIZE, io, cache, false).unwrap();
    e.start().unwrap();
    let mut h = MockHost::new(&e, 8 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 256, 1, false).unwrap();
    let bufs: Vec<u64> = (0..qd).map(|_| h.alloc(4096)).collect();
    let mut rng = Rng::seeded(qd as u64 + 7);
    let blocks = SIZE / 4096;
    let mut written = std::collections::HashMap::new();
    for round in 0..4 {
        let mut lbas = Vec::new();
        for (i, &b) in bufs.iter().enumerate() {
            let blk = rng.below(blocks);
            if lbas.contains(&blk) {
                continue;
            }
            lbas.push(blk);
            let data: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
            h.mem.write(b, &data);
            written.insert(blk, data);
            q.push(&io_cmd(
                op::WRITE,
                (round * qd + i) as u16,
                blk * 8,
                8,
                b,
                0,
            ));
        }
        q.ring_sq(&e);
        for _ in 0..lbas.len() {
            let c = q.wait(Duration::from_secs(10)).expect("write completion");
            assert!(c.status().is_success(), "write failed: {:?}", c.status());
        }
        q.ring_cq(&e);
    }
    assert!(run(&e, &mut q, io_cmd(op::FLUSH, 999, 0, 1, 0, 0))
        .status()
        .is_success());
    let f = std::fs::File::open(&p.0).unwrap();
    for (blk, data) in &written {
        let mut got = vec![0u8; 4096];
        f.read_exact_at(&mut got, blk * 4096).unwrap();
        assert_eq!(&got, data, "file block {blk}");
    }
    let all: Vec<_> = written.iter().collect();
    for chunk in all.chunks(qd) {
        for (i, (blk, _)) in chunk.iter().enumerate() {
            h.mem.write(bufs[i], &[0xA5; 4096]);
            q.push(&io_cmd(op::READ, i as u16, **blk * 8, 8, bufs[i], 0));
        }
        q.ring_sq(&e);
        for _ in 0..chunk.len() {
            let c = q.wait(Duration::from_secs(10)).expect("read completion");
            assert!(c.status().is_success(), "read failed: {:?}", c.status());
        }
        q.ring_cq(&e);
        for (i, (_, data)) in chunk.iter().enumerate() {
            let mut got = vec![0u8; 4096];
            h.mem.read(bufs[i], &mut got);
            assert_eq!(&got, *data);
        }
    }
    let info = e.namespace_info(1).unwrap();
    assert_eq!(info.size_bytes, SIZE);
    let counters: std::collections::HashMap<_, _> = e.counters().into_iter().collect();
    let key = format!("file_ops_{}", info.io);
    assert!(
        counters[key.as_str()] >= written.len() as u64 * 2,
        "{key}: {counters:?}"
    );
    assert_eq!(counters["file_ops"], counters[key.as_str()]);
    match io {
        Choice::Threads => assert_eq!(info.io, "threads"),
        Choice::IoUring => assert_eq!(info.io, "io_uring"),
        Choice::Inline => assert_eq!(info.io, "inline"),
        Choice::Auto => {}
    }
    e.stop();
}

#[test]
fn roundtrip_buffered_io_uring() {
    roundtrip("/dev/shm", Choice::IoUring, CacheMode::Buffered, 32);
}

#[test]
fn roundtrip_buffered_threads() {
    roundtrip("/dev/shm", Choice::Threads, CacheMode::Buffered, 32);
}

#[test]
fn roundtrip_direct_io_uring() {
    roundtrip("/var/tmp", Choice::IoUring, CacheMode::Direct, 16);
}

#[test]
fn roundtrip_direct_threads() {
    roundtrip("/var/tmp", Choice::Threads, CacheMode::Direct, 16);
}

#[test]
fn unaligned_buffers_under_o_direct_take_the_buffered_descriptor() {
    let p = TempPath::new("/var/tmp", "unaligned");
    let e = file_engine(&p.0, SIZE, Choice::Auto, CacheMode::Direct, false).unwrap();
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(8192);
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 253) as u8).collect();
    // PRP1 at offset 0x10: 4080 bytes in page one, 16 in page two.
    h.mem.write(buf + 0x10, &data);
    let c = run(
        &e,
        &mut q,
        io_cmd(op::WRITE, 1, 16, 8, buf + 0x10, buf + 4096),
    );
    assert!(c.status().is_success());
    let mut got = vec![0u8; 4096];
    std::fs::File::open(&p.0)
        .unwrap()
        .read_exact_at(&mut got, 16 * 512)
        .unwrap();
    assert_eq!(got, data);
    e.stop();
}

#[test]
fn file_errors_get_nvme_statuses() {
    // /dev/full: reads give zeroes, writes fail with ENOSPC.
    let e = file_engine("/dev/full", 1 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    let c = run(&e, &mut q, io_cmd(op::WRITE, 1, 0, 8, buf, 0));
    assert_eq!(c.status(), Status::CAPACITY_EXCEEDED.dnr());
    let c = run(&e, &mut q, io_cmd(op::READ, 2, 0, 8, buf, 0));
    assert!(c.status().is_success());
    let errs = e.take_errors();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].cid, 1);
    assert_eq!(errs[0].failure.status, Status::CAPACITY_EXCEEDED.dnr());
    e.stop();
    // The mapping itself, errno by errno.
    let mut smart = io::Smart::default();
    let f = io::file_failure(libc::EIO, false, 5, 1, &mut smart);
    assert_eq!(f.status, Status::UNRECOVERED_READ_ERROR);
    assert_eq!(
        io::file_failure(libc::EIO, true, 5, 1, &mut smart).status,
        Status::WRITE_FAULT
    );
    assert_eq!(smart.media_errors, 2);
    assert_eq!(
        io::file_failure(libc::EINVAL, true, 5, 1, &mut smart).status,
        Status::INTERNAL_ERROR
    );
}

#[test]
fn readonly_namespace_is_write_protected() {
    let p = TempPath::new("/dev/shm", "ro");
    std::fs::write(&p.0, vec![0x5Au8; 1 << 20]).unwrap();
    let e = file_engine(&p.0, 0, Choice::Auto, CacheMode::Auto, true).unwrap();
    assert_eq!(e.namespace_size(1), Some(1 << 20));
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let buf = h.alloc(4096);
    let c = run(&e, &mut q, io_cmd(op::WRITE, 1, 0, 8, buf, 0));
    assert_eq!(c.status(), Status::NAMESPACE_WRITE_PROTECTED.dnr());
    let c = run(&e, &mut q, io_cmd(op::WRITE_ZEROES, 2, 0, 8, 0, 0));
    assert_eq!(c.status(), Status::NAMESPACE_WRITE_PROTECTED.dnr());
    let c = run(&e, &mut q, io_cmd(op::READ, 3, 0, 8, buf, 0));
    assert!(c.status().is_success());
    let mut got = vec![0u8; 4096];
    h.mem.read(buf, &mut got);
    assert!(got.iter().all(|&b| b == 0x5A));
    e.stop();
}

#[test]
fn opening_errors_name_the_path_and_the_fix() {
    let msg = |r: Result<Engine, EngineError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened"),
    };
    let missing = "/dev/shm/nvmefast-no-such-dir/x.img";
    let m = msg(file_engine(
        missing,
        0,
        Choice::Auto,
        CacheMode::Auto,
        false,
    ));
    assert!(m.contains(missing) && m.contains("does not exist"), "{m}");
    let m = msg(file_engine(
        "/dev/shm",
        0,
        Choice::Auto,
        CacheMode::Auto,
        false,
    ));
    assert!(m.contains("directory"), "{m}");
    let p = TempPath::new("/dev/shm", "odd");
    std::fs::write(&p.0, vec![0u8; 1000]).unwrap();
    let m = msg(file_engine(&p.0, 0, Choice::Auto, CacheMode::Auto, false));
    assert!(
        m.contains("not a multiple") && m.contains("truncate -s 1024"),
        "{m}"
    );
    let m = msg(file_engine(&p.0, 512, Choice::Auto, CacheMode::Auto, false));
    assert!(m.contains("not the 512 bytes"), "{m}");
    let m = msg(file_engine(&p.0, 0, Choice::Auto, CacheMode::Direct, false));
    assert!(m.contains("O_DIRECT") || m.contains("multiple"), "{m}");
    // A second engine on one image: the lock refuses it.
    let q = TempPath::new("/dev/shm", "locked");
    let first = file_engine(&q.0, 1 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    let m = msg(file_engine(&q.0, 0, Choice::Auto, CacheMode::Auto, false));
    assert!(m.contains("in use"), "{m}");
    // release_files (close()) lets go of the lock while the engine lives on.
    first.release_files();
    let second = file_engine(&q.0, 0, Choice::Auto, CacheMode::Auto, false).unwrap();
    drop(second);
    drop(first);
    assert!(file_engine(&q.0, 0, Choice::Auto, CacheMode::Auto, false).is_ok());
    // size_bytes creates a sparse file and extends a smaller one.
    let r = TempPath::new("/dev/shm", "sparse");
    let e = file_engine(&r.0, 1 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    drop(e);
    let e = file_engine(&r.0, 2 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    assert_eq!(std::fs::metadata(&r.0).unwrap().len(), 2 << 20);
    drop(e);
}

#[test]
fn stop_reset_and_delete_wait_for_commands_in_flight() {
    for io in [Choice::IoUring, Choice::Threads] {
        let p = TempPath::new("/var/tmp", "drain");
        let e = file_engine(&p.0, SIZE, io, CacheMode::Direct, false).unwrap();
        e.start().unwrap();
        let mut h = MockHost::new(&e, 4 << 20).unwrap();
        let mut q = h.create_queue_pair(&e, 1, 256, 1, false).unwrap();
        let buf = h.alloc(64 * 4096);
        for i in 0..64u16 {
            q.push(&io_cmd(
                op::WRITE,
                i,
                u64::from(i) * 8,
                8,
                buf + u64::from(i) * 4096,
                0,
            ));
        }
        q.ring_sq(&e);
        // Once the first has completed all 64 were fetched (one pass takes
        // up to 64): Delete SQ returns only when the rest have completed.
        q.wait(Duration::from_secs(10)).expect("first completion");
        e.delete_sq(1).unwrap();
        let mut n = 1;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 64, "{io:?}: Delete SQ returned with commands in flight");
        e.delete_cq(1).unwrap();
        let mut q = h.create_queue_pair(&e, 2, 256, 1, false).unwrap();
        for i in 0..64u16 {
            let mut s = io_cmd(
                op::READ,
                i,
                u64::from(i) * 8,
                8,
                buf + u64::from(i) * 4096,
                0,
            );
            s.dw[1] = 1;
            q.push(&s);
        }
        q.ring_sq(&e);
        e.reset();
        e.stop();
        drop(e);
    }
}

/// A quick figure for tuning (not a test of behaviour):
/// `NVMEFAST_FILE_BENCH=/dev/shm/x.img cargo test --release --lib file_quick_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn file_quick_bench() {
    use crate::driver::bench::{self, Mode, Params, Workload};
    let path = std::env::var("NVMEFAST_FILE_BENCH").unwrap_or("/dev/shm/nvmefast-qb.img".into());
    let io = Choice::parse(&std::env::var("NVMEFAST_FILE_IO").unwrap_or("auto".into())).unwrap();
    let size = 1u64 << 30;
    let cache = CacheMode::parse(&std::env::var("QB_CACHE").unwrap_or("auto".into())).unwrap();
    let e = file_engine(&path, size, io, cache, false).unwrap();
    println!("{:?}", e.namespace_info(1).unwrap());
    e.start().unwrap();
    let mut h = MockHost::new(&e, 8 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 128, 1, false).unwrap();
    let buf = h.alloc(64 * 4096);
    let order = if std::env::var("QB_WRITE_FIRST").is_ok() {
        [Workload::RandWrite, Workload::RandRead]
    } else {
        [Workload::RandRead, Workload::RandWrite]
    };
    for w in order {
        for qd in [1u32, 4, 16, 64] {
            let p = Params {
                workload: w,
                nsid: 1,
                ns_lbas: size / 512,
                lba_size: 512,
                block_size: 4096,
                qd,
                seconds: 1.0,
                mode: Mode::Poll,
                eventfd: None,
                buf_iova: buf,
                ring_each: false,
                prinfo: 0,
            };
            let o = bench::run(&e, &h.mem, &mut q, &p).unwrap();
            println!(
                "{w:?} qd {qd}: {:.1} KIOPS mean {:.2} us p50 {:.2} p99 {:.2} errors {}",
                o.ios as f64 / o.seconds / 1e3,
                o.mean_ns / 1e3,
                o.p50_ns / 1e3,
                o.p99_ns / 1e3,
                o.errors
            );
        }
    }
    e.stop();
}

#[test]
fn roundtrip_direct_tmpfs_io_uring() {
    roundtrip("/dev/shm", Choice::IoUring, CacheMode::Auto, 32);
}

#[test]
fn roundtrip_inline() {
    roundtrip("/var/tmp", Choice::Inline, CacheMode::Auto, 8);
}

#[test]
fn tmpfs_files_are_served_inline_by_default() {
    let p = TempPath::new("/dev/shm", "inline");
    let e = file_engine(&p.0, 1 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    // tmpfs refuses RWF_NOWAIT: io_uring would hand every request to a thread.
    assert_eq!(e.namespace_info(1).unwrap().io, "inline");
    let q = TempPath::new("/var/tmp", "uring");
    let e = file_engine(&q.0, 1 << 20, Choice::Auto, CacheMode::Auto, false).unwrap();
    assert_ne!(e.namespace_info(1).unwrap().io, "inline");
}

/// A loop device over a file in /var/tmp (root only; None with the reason
/// printed when losetup cannot make one here).
struct Loop {
    dev: String,
    backing: TempPath,
}

impl Loop {
    fn new(size: u64) -> Option<Loop> {
        let backing = TempPath::new("/var/tmp", "loop");
        std::fs::File::create(&backing.0).ok()?.set_len(size).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show", &backing.0])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "no loop device here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Some(Loop { dev, backing })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

#[test]
fn block_device_namespace() {
    let Some(lo) = Loop::new(16 << 20) else {
        eprintln!("skipped: needs root and losetup");
        return;
    };
    for io in [Choice::IoUring, Choice::Threads] {
        let e = file_engine(&lo.dev, 0, io, CacheMode::Auto, false).unwrap();
        assert_eq!(e.namespace_size(1), Some(16 << 20));
        let info = e.namespace_info(1).unwrap();
        assert_eq!(info.cache, "direct", "{info:?}");
        // Exclusive: a second engine on the device is refused while this one lives.
        let m = match file_engine(&lo.dev, 0, Choice::Auto, CacheMode::Auto, false) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("a second writer opened {}", lo.dev),
        };
        assert!(m.contains("in use") && m.contains(&lo.dev), "{m}");
        e.start().unwrap();
        let mut h = MockHost::new(&e, 1 << 20).unwrap();
        let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
        let buf = h.alloc(8192);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 241) as u8 + 1).collect();
        h.mem.write(buf, &data);
        let c = run(&e, &mut q, io_cmd(op::WRITE, 1, 2048, 16, buf, buf + 4096));
        assert!(c.status().is_success(), "{:?}", c.status());
        assert!(run(&e, &mut q, io_cmd(op::FLUSH, 2, 0, 1, 0, 0))
            .status()
            .is_success());
        // The data is in the loop device's backing file at LBA 2048.
        let mut got = vec![0u8; 8192];
        std::fs::File::open(&lo.backing.0)
            .unwrap()
            .read_exact_at(&mut got, 2048 * 512)
            .unwrap();
        assert_eq!(got, data, "{io:?}");
        // Deallocate (Write Zeroes with DEAC) reads back as zeroes.
        let mut wz = io_cmd(op::WRITE_ZEROES, 3, 2048, 8, 0, 0);
        wz.dw[12] |= 1 << 25;
        assert!(run(&e, &mut q, wz).status().is_success());
        h.mem.write(buf, &[0xEE; 8192]);
        let c = run(&e, &mut q, io_cmd(op::READ, 4, 2048, 16, buf, buf + 4096));
        assert!(c.status().is_success());
        h.mem.read(buf, &mut got);
        assert!(
            got[..4096].iter().all(|&b| b == 0),
            "{io:?}: deallocated LBAs are not zero"
        );
        assert_eq!(&got[4096..], &data[4096..]);
        e.stop();
    }
    // size_bytes other than the device's is refused with the fix.
    let m = match file_engine(&lo.dev, 1 << 20, Choice::Auto, CacheMode::Auto, false) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("size_bytes smaller than the device was accepted"),
    };
    assert!(m.contains("omit size_bytes"), "{m}");
}
