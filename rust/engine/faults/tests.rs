//! Fault injection through the driver mock: each action seen from the host
//! side (statuses, data, timing, interrupts, CSTS.CFS, what survives a power
//! loss), the counters, Abort / Delete SQ / reset of held commands, rules
//! edited while I/O runs, and the file path.

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::super::file_tests::{file_engine, TempPath};
use super::super::tests::engine;
use super::*;
use crate::aio::Choice;
use crate::backend::CacheMode;
use crate::driver::{HostQueue, MockHost};
use crate::irq::tests::{drain, eventfd};
use crate::spec::opcode::io as op;

fn io_rule(action: Action) -> (Match, Action, Firing) {
    (
        Match {
            queue: QueueMatch::Io,
            opcode: None,
            nsid: None,
            lba: None,
            zone: None,
        },
        action,
        Firing::default(),
    )
}

fn add(e: &Engine, (m, a, f): (Match, Action, Firing)) -> u64 {
    e.add_fault(m, a, f).unwrap()
}

fn once(mut r: (Match, Action, Firing)) -> (Match, Action, Firing) {
    r.2.count = 1;
    r
}

fn cmd(opcode: u8, cid: u16, slba: u64, buf: u64) -> Sqe {
    let mut s = Sqe::new(opcode, cid, 1);
    s.set_prps(buf, 0);
    s.set_lba_range(slba, 8);
    s
}

fn submit(e: &Engine, q: &mut HostQueue, s: Sqe) {
    q.push(&s);
    q.ring_sq(e);
}

fn wait(e: &Engine, q: &mut HostQueue, within: Duration) -> Option<Cqe> {
    let c = q.wait(within)?;
    q.ring_cq(e);
    Some(c)
}

/// Waits up to 5 s for `cond` (a worker on a loaded machine may take a
/// while to fetch): what a held command or a fault becomes visible by.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn setup(e: &Engine, ien: bool) -> (MockHost, HostQueue) {
    e.start().unwrap();
    let mut h = MockHost::new(e, 1 << 20).unwrap();
    let q = h.create_queue_pair(e, 1, 16, 1, ien).unwrap();
    (h, q)
}

#[test]
fn status_and_transfer_error_complete_unexecuted() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    h.mem.write(buf, &[0xab; 4096]);
    let media = Status::UNRECOVERED_READ_ERROR.dnr();
    let id = add(&e, once(io_rule(Action::Status(media))));
    submit(&e, &mut q, cmd(op::WRITE, 1, 0, buf));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (1, media));
    // Not executed: the write never reached the namespace.
    let out = h.alloc(4096);
    submit(&e, &mut q, cmd(op::READ, 2, 0, out));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    let mut back = [1u8; 4096];
    h.mem.read(out, &mut back);
    assert_eq!(back, [0u8; 4096]);
    let info = e.faults();
    assert_eq!((info[0].id, info[0].matched, info[0].hits), (id, 2, 1));
    let errors = e.take_errors();
    assert_eq!(errors.len(), 1, "a failed command is in the error log");
    assert_eq!((errors[0].cid, errors[0].failure.status), (1, media));
    assert!(e.remove_fault(id) && !e.remove_fault(id));
    add(&e, once(io_rule(Action::TransferError)));
    submit(&e, &mut q, cmd(op::READ, 3, 0, out));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!(c.status(), Status::DATA_TRANSFER_ERROR);
    assert_eq!(e.take_errors()[0].failure.param_loc, DPTR);
}

#[test]
fn a_delayed_completion_arrives_late_and_after_later_commands() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    let ms = 150;
    let rule = (
        Match {
            lba: Some((100, 100)),
            zone: None,
            ..io_rule(Action::DropIrq).0
        },
        Action::Delay {
            ns: ms * 1_000_000,
            abortable: false,
        },
        Firing::default(),
    );
    add(&e, rule);
    let t0 = Instant::now();
    submit(&e, &mut q, cmd(op::READ, 1, 100, buf));
    submit(&e, &mut q, cmd(op::READ, 2, 0, buf));
    let first = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!(first.cid, 2, "the undelayed command completes first");
    assert_eq!(e.faults_held(), 1);
    let second = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    let took = t0.elapsed();
    assert_eq!((second.cid, second.status()), (1, Status::SUCCESS));
    assert!(took >= Duration::from_millis(ms), "{took:?}");
    assert_eq!(second.sqhd, 2, "SQ head as of the post");
    assert_eq!(e.faults_held(), 0);
}

#[test]
fn never_completes_until_abort_delete_or_reset() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    let never = |abortable| io_rule(Action::Never { abortable });
    let id = add(&e, once(never(false)));
    submit(&e, &mut q, cmd(op::READ, 7, 0, buf));
    assert!(wait(&e, &mut q, Duration::from_millis(200)).is_none());
    assert_eq!(e.faults_held(), 1);
    assert!(!e.abort_command(1, 7), "not abortable: Abort fails");
    e.remove_fault(id);
    add(&e, once(never(true)));
    submit(&e, &mut q, cmd(op::READ, 8, 0, buf));
    until("two held", || e.faults_held() == 2);
    assert!(e.abort_command(1, 8));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (8, Status::ABORT_REQUESTED));
    // Delete SQ completes what is still held with Aborted due to SQ Deletion.
    e.delete_sq(1).unwrap();
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (7, Status::ABORT_SQ_DELETED));
    assert_eq!(e.faults_held(), 0);
    // A reset drops held commands, posting nothing.
    e.delete_cq(1).unwrap();
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    add(&e, once(never(false)));
    submit(&e, &mut q, cmd(op::READ, 9, 0, buf));
    until("one held", || e.faults_held() == 1);
    e.reset();
    assert_eq!(e.faults_held(), 0);
}

#[test]
fn corrupt_flips_one_byte_of_what_a_read_returns() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    let src = h.alloc(4096);
    let data: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
    h.mem.write(src, &data);
    add(
        &e,
        io_rule(Action::Corrupt {
            offset: 1000,
            xor: 0x5a,
        }),
    );
    // Writes are not corrupted (corrupt matches Read only).
    submit(&e, &mut q, cmd(op::WRITE, 1, 0, src));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    let out = h.alloc(4096);
    submit(&e, &mut q, cmd(op::READ, 2, 0, out));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert!(c.status().is_success());
    let mut back = vec![0u8; 4096];
    h.mem.read(out, &mut back);
    let diff: Vec<usize> = (0..4096).filter(|&i| back[i] != data[i]).collect();
    assert_eq!(diff, vec![1000]);
    assert_eq!(back[1000], data[1000] ^ 0x5a);
    assert_eq!(e.faults()[0].hits, 1);
}

#[test]
fn irq_faults_drop_or_delay_the_signal_of_that_completion() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, true);
    let efd = eventfd();
    e.set_vector_eventfd(1, Some(efd.as_raw_fd())).unwrap();
    let buf = h.alloc(4096);
    add(&e, once(io_rule(Action::DropIrq)));
    submit(&e, &mut q, cmd(op::READ, 1, 0, buf));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!(c.cid, 1, "posted");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drain(&efd), 0, "its interrupt was dropped");
    submit(&e, &mut q, cmd(op::READ, 2, 0, buf));
    wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    until("the next completion signals", || drain(&efd) == 1);
    add(&e, once(io_rule(Action::DelayIrq { ns: 200_000_000 })));
    let t0 = Instant::now();
    submit(&e, &mut q, cmd(op::READ, 3, 0, buf));
    wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    // Posted at once, signalled 200 ms later: a signal seen at all must be
    // seen after the delay (however slow this machine is).
    let mut took = Duration::ZERO;
    until("the late signal", || {
        let got = drain(&efd) != 0;
        took = t0.elapsed();
        got
    });
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[test]
fn cfs_fails_the_controller_until_a_reset() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    add(&e, once(io_rule(Action::Cfs)));
    submit(&e, &mut q, cmd(op::READ, 1, 0, buf));
    until("CSTS.CFS", || e.fatal());
    submit(&e, &mut q, cmd(op::READ, 2, 0, buf));
    assert!(
        wait(&e, &mut q, Duration::from_millis(200)).is_none(),
        "nothing completes, nothing more is fetched"
    );
    e.reset();
    assert!(!e.fatal() && e.faults_held() == 0);
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    submit(&e, &mut q, cmd(op::READ, 3, 0, buf));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
}

#[test]
fn a_power_loss_drops_unflushed_writes_and_turns_the_controller_off() {
    let e = engine(50, 0);
    let (mut h, mut q) = setup(&e, false);
    assert_eq!(
        e.track_unflushed(true),
        vec![2],
        "the null namespace cannot be tracked"
    );
    let buf = h.alloc(4096);
    let write = |q: &mut HostQueue, cid: u16, slba: u64, byte: u8, fua: bool| {
        h.mem.write(buf, &[byte; 4096]);
        let mut s = cmd(op::WRITE, cid, slba, buf);
        if fua {
            s.dw[12] |= 1 << 30;
        }
        submit(&e, q, s);
        assert!(wait(&e, q, Duration::from_secs(5))
            .unwrap()
            .status()
            .is_success());
    };
    write(&mut q, 1, 0, 1, false);
    submit(&e, &mut q, Sqe::new(op::FLUSH, 2, 1));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    write(&mut q, 3, 0, 2, false); // over flushed data: rolled back to 1s
    write(&mut q, 4, 8, 3, false); // never flushed: rolled back to zeroes
    write(&mut q, 5, 16, 4, true); // FUA: survives
    assert_eq!(e.unflushed_blocks(), 16);
    // The power goes on the next write, which is lost too.
    add(&e, once(io_rule(Action::PowerLoss)));
    submit(&e, &mut q, cmd(op::WRITE, 6, 24, buf));
    assert!(wait(&e, &mut q, Duration::from_millis(300)).is_none());
    let t0 = Instant::now();
    while !e.powered_off() || e.unflushed_blocks() != 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "power loss not done");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(e.fatal(), "off: CSTS reads as failed, nothing is fetched");
    e.power_on();
    assert!(!e.powered_off() && !e.fatal());
    let mut q = h.create_queue_pair(&e, 1, 16, 1, false).unwrap();
    let out = h.alloc(4096);
    for (cid, slba, byte) in [(7, 0, 1u8), (8, 8, 0), (9, 16, 4), (10, 24, 0)] {
        submit(&e, &mut q, cmd(op::READ, cid, slba, out));
        assert!(wait(&e, &mut q, Duration::from_secs(5))
            .unwrap()
            .status()
            .is_success());
        let mut back = [0xffu8; 4096];
        h.mem.read(out, &mut back);
        assert_eq!(back, [byte; 4096], "LBA {slba}");
    }
    // The API's power loss, with nothing unflushed.
    assert_eq!(e.power_loss(), 0);
    assert!(e.powered_off());
    e.power_on();
}

#[test]
fn admin_rules_fail_hold_or_delay_admin_commands() {
    let e = engine(50, 0);
    e.start().unwrap();
    let mut h = MockHost::new(&e, 1 << 20).unwrap();
    let mut q = h.create_queue_pair(&e, 0, 8, 0, false).unwrap();
    let admin = Match {
        queue: QueueMatch::Admin,
        opcode: Some(0x06),
        nsid: None,
        lba: None,
        zone: None,
    };
    let st = Status::new(1, 0x0b).dnr();
    let f = Firing {
        count: 1,
        ..Firing::default()
    };
    e.add_fault(admin, Action::Status(st), f).unwrap();
    submit(&e, &mut q, Sqe::new(0x06, 1, 0));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (1, st));
    // No handler installed: an unfaulted admin command is Invalid Opcode.
    submit(&e, &mut q, Sqe::new(0x06, 2, 0));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!(c.status(), Status::INVALID_OPCODE.dnr());
    e.add_fault(admin, Action::Never { abortable: true }, f)
        .unwrap();
    submit(&e, &mut q, Sqe::new(0x06, 3, 0));
    assert!(wait(&e, &mut q, Duration::from_millis(150)).is_none());
    assert!(e.abort_command(0, 3));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (3, Status::ABORT_REQUESTED));
    let delay = Action::Delay {
        ns: 100_000_000,
        abortable: false,
    };
    e.add_fault(admin, delay, f).unwrap();
    let t0 = Instant::now();
    submit(&e, &mut q, Sqe::new(0x06, 4, 0));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!(c.cid, 4);
    assert!(t0.elapsed() >= Duration::from_millis(100));
}

#[test]
fn rules_change_while_io_runs_and_every_command_completes_once() {
    let e = engine(0, 0);
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    let stop = AtomicBool::new(false);
    let media = Status::WRITE_FAULT;
    let (done, failed) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let id = add(&e, io_rule(Action::Status(media)));
                std::thread::sleep(Duration::from_micros(200));
                e.remove_fault(id);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let (mut done, mut failed) = (0u32, 0u32);
        for i in 0..3000u16 {
            submit(&e, &mut q, cmd(op::READ, i, u64::from(i % 64), buf));
            let c = wait(&e, &mut q, Duration::from_secs(5)).expect("lost a command");
            assert_eq!(c.cid, i, "one completion per command, in order");
            done += 1;
            if c.status() == media {
                failed += 1;
            } else {
                assert!(c.status().is_success());
            }
        }
        stop.store(true, Ordering::Relaxed);
        (done, failed)
    });
    assert_eq!(done, 3000);
    assert!(failed > 0 && failed < 3000, "{failed} of 3000 failed");
    assert!(e.faults().is_empty());
}

#[test]
fn file_commands_take_delay_and_corrupt_as_they_complete() {
    let dir = std::env::temp_dir();
    let p = TempPath::new(dir.to_str().unwrap(), "faults");
    let Ok(e) = file_engine(&p.0, 1 << 20, Choice::IoUring, CacheMode::Buffered, false)
        .or_else(|_| file_engine(&p.0, 1 << 20, Choice::Threads, CacheMode::Buffered, false))
    else {
        panic!("no file engine");
    };
    let (mut h, mut q) = setup(&e, false);
    let buf = h.alloc(4096);
    let data: Vec<u8> = (0..4096).map(|i| (i * 3) as u8).collect();
    h.mem.write(buf, &data);
    submit(&e, &mut q, cmd(op::WRITE, 1, 0, buf));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    add(
        &e,
        once(io_rule(Action::Corrupt {
            offset: 9999,
            xor: 0xff,
        })),
    );
    let out = h.alloc(4096);
    submit(&e, &mut q, cmd(op::READ, 2, 0, out));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    let mut back = vec![0u8; 4096];
    h.mem.read(out, &mut back);
    let diff: Vec<usize> = (0..4096).filter(|&i| back[i] != data[i]).collect();
    assert_eq!(diff, vec![4095], "past the end: the last byte");
    let delay = Action::Delay {
        ns: 100_000_000,
        abortable: false,
    };
    add(&e, once(io_rule(delay)));
    let t0 = Instant::now();
    submit(&e, &mut q, cmd(op::READ, 3, 0, out));
    let c = wait(&e, &mut q, Duration::from_secs(5)).unwrap();
    assert_eq!((c.cid, c.status()), (3, Status::SUCCESS));
    assert!(t0.elapsed() >= Duration::from_millis(100));
}

#[test]
fn a_file_namespace_rolls_back_unflushed_writes_in_the_file() {
    let dir = std::env::temp_dir();
    let p = TempPath::new(dir.to_str().unwrap(), "powerloss");
    let e = file_engine(&p.0, 1 << 20, Choice::Auto, CacheMode::Buffered, false).unwrap();
    let (mut h, mut q) = setup(&e, false);
    assert!(e.track_unflushed(true).is_empty());
    let buf = h.alloc(4096);
    h.mem.write(buf, &[7u8; 4096]);
    submit(&e, &mut q, cmd(op::WRITE, 1, 0, buf));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    submit(&e, &mut q, Sqe::new(op::FLUSH, 2, 1));
    assert!(wait(&e, &mut q, Duration::from_secs(5))
        .unwrap()
        .status()
        .is_success());
    h.mem.write(buf, &[9u8; 4096]);
    submit(&e, &mut q, cmd(op::WRITE, 3, 0, buf));
    submit(&e, &mut q, cmd(op::WRITE, 4, 8, buf));
    for _ in 0..2 {
        assert!(wait(&e, &mut q, Duration::from_secs(5))
            .unwrap()
            .status()
            .is_success());
    }
    assert_eq!(e.power_loss(), 16);
    let f = std::fs::read(&p.0).unwrap();
    assert!(f[..4096].iter().all(|&b| b == 7), "flushed data stays");
    assert!(
        f[4096..8192].iter().all(|&b| b == 0),
        "unflushed data is gone"
    );
}

#[test]
fn no_rule_costs_no_hit_and_the_table_starts_disarmed() {
    let e = engine(50, 0);
    assert!(!e.shared.faults.armed());
    let id = add(&e, io_rule(Action::DropIrq));
    assert!(e.shared.faults.armed());
    e.clear_faults();
    assert!(!e.shared.faults.armed() && e.faults().is_empty());
    assert!(!e.remove_fault(id));
}
