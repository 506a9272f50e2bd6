//! Device Self-test and Sanitize as background operations of the engine:
//! each on a thread of its own, over the namespaces' storage
//! (`nsmgmt::background` does the steps). The admin commands, their logs
//! and the events are the control plane's; this is what they start, poll
//! and abort.
//!
//! A step touches storage under the storage gate, shared (a resize or a
//! Format NVM takes it exclusively, so storage never moves under a step),
//! and only a namespace still in the table: a removed one is skipped, so
//! a removal never waits for an operation. A sanitize holds every command
//! but Flush off every namespace (`INACTIVE_SANITIZE`: Sanitize In
//! Progress) from before `sanitize_start` returns until it ends; a
//! controller reset does not stop it. The engine going away stops both.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{lock, Engine, EngineError, Shared};
use crate::cmd::io::{Namespace, INACTIVE_SANITIZE};
use crate::nsmgmt::background::{self as bg, Erase, Outcome, Progress};

/// Called on the operation's thread when one finishes by itself (not when
/// aborted): "self-test" or "sanitize".
pub type BackgroundCallback = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The self-test as `Engine::self_test_status` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfTestStatus {
    pub running: bool,
    pub extended: bool,
    /// 0..=100 (below 100 while running).
    pub percent: u8,
    /// The last one's result (None while running or before the first).
    pub outcome: Outcome,
    /// The namespace being read (running) or where it failed.
    pub nsid: u32,
    /// The segment running, or the one that failed (0: none).
    pub segment: u8,
}

/// Where a sanitize is (Sanitize Status log SOS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SanitizeState {
    #[default]
    Idle,
    Running,
    Done,
    Failed,
}

/// The sanitize as `Engine::sanitize_status` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SanitizeStatus {
    pub state: SanitizeState,
    /// SPROG: 0..=65535 of 65536.
    pub progress: u16,
    /// Overwrite passes completed.
    pub passes_done: u8,
}

/// A sanitize request (Sanitize CDW10/CDW11 as the control plane read them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SanitizeRequest {
    pub erase: Erase,
    /// Deallocate after the erase (NDAS clear).
    pub deallocate: bool,
    /// The least time it takes.
    pub min: Duration,
}

struct Job {
    progress: Arc<Progress>,
    thread: Option<JoinHandle<()>>,
}

impl Job {
    /// Asks it to stop and waits until it has (unless called on its own
    /// thread: from the background handler).
    fn cancel(&mut self) {
        self.progress.cancel.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

#[derive(Default)]
struct State {
    test: Option<Job>,
    test_status: SelfTestStatus,
    sanitize: Option<Job>,
    sanitize_status: SanitizeStatus,
}

/// The engine's background operations.
#[derive(Default)]
pub(super) struct Background {
    state: Mutex<State>,
    handler: Mutex<Option<BackgroundCallback>>,
    /// True from `sanitize_start` until the sanitize ends: a namespace
    /// added meanwhile is held off too.
    pub(super) sanitizing: std::sync::atomic::AtomicBool,
}

/// The namespace at `nsid` if it is still `want` (not removed, not
/// replaced by another at the same NSID).
fn current(shared: &Shared, nsid: u32, want: &Weak<Namespace>) -> Option<Arc<Namespace>> {
    shared
        .namespace(nsid)
        .filter(|ns| std::ptr::eq(Arc::as_ptr(ns), want.as_ptr()))
}

fn notify(shared: &Shared, what: &'static str) {
    let cb = lock(&shared.background.handler).clone();
    if let Some(cb) = cb {
        cb(what);
    }
}

/// The self-test's thread body: reads each namespace in `targets`, and
/// takes the time asked for whatever it found (a test that failed at once
/// still shows progress to a poller: nvme-cli --wait needs that).
fn self_test(
    shared: &Shared,
    targets: &[(u32, Weak<Namespace>)],
    extended: bool,
    p: &Progress,
) -> Outcome {
    let outcome = test_reads(shared, targets, extended, p);
    if outcome == Outcome::Aborted {
        return outcome;
    }
    p.finish();
    if p.pace() {
        outcome
    } else {
        Outcome::Aborted
    }
}

/// The reads of a self-test: Passed (not yet paced), Failed or Aborted.
fn test_reads(
    shared: &Shared,
    targets: &[(u32, Weak<Namespace>)],
    extended: bool,
    p: &Progress,
) -> Outcome {
    let mut plans = Vec::new();
    for (nsid, weak) in targets {
        if let Some(ns) = current(shared, *nsid, weak) {
            let chunks = bg::test_chunks(ns.size_bytes(), extended);
            p.add_total(chunks.len() as u64 + 1);
            plans.push((*nsid, weak, chunks));
        }
    }
    let mut buf = Vec::new();
    for (nsid, weak, chunks) in plans {
        set_test_place(shared, nsid, bg::SEGMENT_INTEGRITY);
        // Segment 5: the marks Write Uncorrectable left, all of them.
        if let Some(ns) = current(shared, nsid, weak) {
            if let Some(lba) = ns.uncorrectable.first_marked(0, ns.lbas()) {
                return failed(nsid, lba, bg::SEGMENT_INTEGRITY);
            }
        }
        p.advance(1);
        set_test_place(shared, nsid, bg::SEGMENT_MEDIA);
        for (off, len) in chunks {
            if p.cancelled() {
                return Outcome::Aborted;
            }
            let _gate = shared
                .storage_gate
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let Some(ns) = current(shared, nsid, weak) else {
                break;
            };
            // It may have shrunk since the plan.
            let size = ns.size_bytes();
            if off < size {
                let len = len.min(size - off);
                if let Some((lba, segment)) = bg::test_chunk(&ns, off, len, &mut buf) {
                    return failed(nsid, lba, segment);
                }
            }
            p.advance(1);
        }
    }
    Outcome::Passed
}

fn failed(nsid: u32, lba: u64, segment: u8) -> Outcome {
    Outcome::Failed { nsid, lba, segment }
}

fn set_test_place(shared: &Shared, nsid: u32, segment: u8) {
    let mut st = lock(&shared.background.state);
    st.test_status.nsid = nsid;
    st.test_status.segment = segment;
}

/// The sanitize's thread body: every namespace erased, then sanitized;
/// Ok carries the passes done.
fn sanitize(
    shared: &Shared,
    targets: &[(u32, Weak<Namespace>)],
    req: SanitizeRequest,
    p: &Progress,
) -> Result<(), bg::Outcome> {
    // Commands in flight to a file when it began complete first.
    let deadline = Instant::now() + Duration::from_secs(30);
    while targets
        .iter()
        .filter_map(|(n, w)| current(shared, *n, w))
        .any(|ns| ns.inflight.load(Ordering::Acquire) > 0)
        && Instant::now() < deadline
    {
        shared.wake_all();
        std::thread::sleep(Duration::from_micros(50));
    }
    let passes = req.erase.passes();
    for (nsid, weak) in targets {
        if let Some(ns) = current(shared, *nsid, weak) {
            p.add_total(ns.size_bytes().div_ceil(bg::CHUNK) * u64::from(passes) + 1);
        }
    }
    let mut buf = Vec::new();
    for pass in 0..passes {
        for (nsid, weak) in targets {
            let mut off = 0;
            loop {
                if p.cancelled() {
                    return Err(Outcome::Aborted);
                }
                let _gate = shared
                    .storage_gate
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                let Some(ns) = current(shared, *nsid, weak) else {
                    break;
                };
                let size = ns.size_bytes();
                if off >= size {
                    break;
                }
                let len = bg::CHUNK.min(size - off);
                bg::erase_chunk(&ns, off, len, req.erase.pattern(pass), &mut buf).map_err(
                    |_| Outcome::Failed {
                        nsid: *nsid,
                        lba: off >> ns.lba_shift(),
                        segment: 0,
                    },
                )?;
                off += len;
                p.advance(1);
            }
        }
        lock(&shared.background.state).sanitize_status.passes_done = pass + 1;
    }
    for (nsid, weak) in targets {
        let _gate = shared
            .storage_gate
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(ns) = current(shared, *nsid, weak) {
            bg::sanitized(&ns, req.deallocate || req.erase == Erase::Block).map_err(|_| {
                Outcome::Failed {
                    nsid: *nsid,
                    lba: 0,
                    segment: 0,
                }
            })?;
        }
        p.advance(1);
    }
    if p.pace() {
        Ok(())
    } else {
        Err(Outcome::Aborted)
    }
}

impl Engine {
    /// Every namespace allocated now, by NSID and weak reference.
    fn targets(&self, nsids: Option<&[u32]>) -> Result<Vec<(u32, Weak<Namespace>)>, EngineError> {
        let table = self.table();
        match nsids {
            None => Ok(table
                .iter()
                .map(|(n, ns)| (n, Arc::downgrade(ns)))
                .collect()),
            Some(list) => list
                .iter()
                .map(|&n| {
                    table
                        .get(n)
                        .map(|ns| (n, Arc::downgrade(ns)))
                        .ok_or_else(|| {
                            EngineError::Namespace(format!(
                                "namespace {n} is not allocated; see allocated_nsids()"
                            ))
                        })
                })
                .collect(),
        }
    }

    /// Device Self-test: starts reading namespaces `nsids` (empty: the
    /// controller alone) in the background, taking at least `min`.
    /// `extended`: all of every namespace, else up to 64 MiB of each
    /// spread over it; both check every block Write Uncorrectable marked.
    /// Busy while one runs or a sanitize does.
    pub fn self_test_start(
        &self,
        nsids: &[u32],
        extended: bool,
        min: Duration,
    ) -> Result<(), EngineError> {
        let targets = self.targets(Some(nsids))?;
        let mut st = lock(&self.shared.background.state);
        if st.test_status.running {
            return Err(EngineError::Busy(
                "a device self-test is running; abort it first (Device Self-test In Progress)"
                    .into(),
            ));
        }
        if self.shared.background.sanitizing.load(Ordering::Relaxed) {
            return Err(EngineError::Busy(
                "a sanitize is running: no self-test until it ends (Sanitize In Progress)".into(),
            ));
        }
        // A finished one's thread may still be in the handler: let it go.
        drop(st.test.take());
        let progress = Arc::new(Progress::new(min));
        st.test_status = SelfTestStatus {
            running: true,
            extended,
            ..SelfTestStatus::default()
        };
        let (shared, p) = (self.shared.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name("nvmefast-selftest".into())
            .spawn(move || {
                let outcome = self_test(&shared, &targets, extended, &p);
                let mut st = lock(&shared.background.state);
                st.test_status.running = false;
                st.test_status.outcome = outcome;
                match outcome {
                    Outcome::Failed { nsid, segment, .. } => {
                        st.test_status.nsid = nsid;
                        st.test_status.segment = segment;
                    }
                    _ => st.test_status.segment = 0,
                }
                st.test_status.percent = 100;
                drop(st);
                if outcome != Outcome::Aborted {
                    notify(&shared, "self-test");
                }
            })
            .map_err(|e| EngineError::Config(format!("cannot start the self-test thread: {e}")))?;
        st.test = Some(Job {
            progress,
            thread: Some(thread),
        });
        Ok(())
    }

    /// The self-test running or the last one's result.
    pub fn self_test_status(&self) -> SelfTestStatus {
        let st = lock(&self.shared.background.state);
        let mut s = st.test_status;
        if let Some(job) = st.test.as_ref().filter(|_| s.running) {
            s.percent = (job.progress.fraction() * 100.0).min(99.0) as u8;
        }
        s
    }

    /// Aborts the self-test running (its result: aborted); false when none
    /// ran (or it finished by itself meanwhile). Returns once it has
    /// stopped reading.
    pub fn self_test_abort(&self) -> bool {
        let job = {
            let mut st = lock(&self.shared.background.state);
            if !st.test_status.running {
                return false;
            }
            st.test.take()
        };
        if let Some(mut job) = job {
            job.cancel();
        }
        // Its thread wrote the outcome as it stopped: aborted, unless it
        // had just finished by itself.
        lock(&self.shared.background.state).test_status.outcome == Outcome::Aborted
    }

    /// Sanitize: every namespace erased as `req` says, in the background.
    /// When this returns every I/O command but Flush fails with Sanitize
    /// In Progress until it ends (a namespace added meanwhile too); a
    /// self-test running is aborted. Busy while one runs; Config when a
    /// namespace is read-only (Namespace Is Write Protected).
    pub fn sanitize_start(&self, req: SanitizeRequest) -> Result<(), EngineError> {
        if !(1..=16).contains(&req.erase.passes()) {
            return Err(EngineError::Config(format!(
                "passes {} must be in 1..=16",
                req.erase.passes()
            )));
        }
        let _changing = lock(&self.shared.ns_lock);
        let targets = self.targets(None)?;
        if let Some(nsid) = self
            .table()
            .iter()
            .find(|(_, ns)| ns.backend.readonly())
            .map(|(n, _)| n)
        {
            return Err(EngineError::Config(format!(
                "namespace {nsid} is read-only: it cannot be sanitized (Namespace Is Write \
                 Protected)"
            )));
        }
        if self.shared.background.sanitizing.load(Ordering::Relaxed) {
            return Err(EngineError::Busy(
                "a sanitize is running; it cannot be aborted (Sanitize In Progress)".into(),
            ));
        }
        // From here a self-test cannot start; one running is aborted (its
        // thread takes the state lock as it ends: stopped outside it).
        self.shared
            .background
            .sanitizing
            .store(true, Ordering::Relaxed);
        let test = {
            let mut st = lock(&self.shared.background.state);
            st.sanitize_status = SanitizeStatus {
                state: SanitizeState::Running,
                progress: 0,
                passes_done: 0,
            };
            // A finished one's thread may still be in the handler: let it go.
            drop(st.sanitize.take());
            let running = st.test_status.running;
            st.test.take().filter(|_| running)
        };
        if let Some(mut job) = test {
            job.cancel();
            let mut st = lock(&self.shared.background.state);
            st.test_status.running = false;
            st.test_status.outcome = Outcome::Aborted;
        }
        for (_, ns) in self.table().iter() {
            ns.set_inactive(INACTIVE_SANITIZE, true);
        }
        // Commands fetched from here on see it (a pass in progress ends).
        self.grace();
        let progress = Arc::new(Progress::new(req.min));
        let (shared, p) = (self.shared.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name("nvmefast-sanitize".into())
            .spawn(move || {
                let r = sanitize(&shared, &targets, req, &p);
                {
                    let _changing = lock(&shared.ns_lock);
                    shared.background.sanitizing.store(false, Ordering::Relaxed);
                    for (_, ns) in shared.namespaces.load().iter() {
                        ns.set_inactive(INACTIVE_SANITIZE, false);
                    }
                }
                let mut st = lock(&shared.background.state);
                st.sanitize_status.state = match r {
                    Ok(()) => SanitizeState::Done,
                    Err(_) => SanitizeState::Failed,
                };
                st.sanitize_status.progress = u16::MAX;
                drop(st);
                if r != Err(Outcome::Aborted) {
                    notify(&shared, "sanitize");
                }
            })
            .map_err(|e| EngineError::Config(format!("cannot start the sanitize thread: {e}")))?;
        lock(&self.shared.background.state).sanitize = Some(Job {
            progress,
            thread: Some(thread),
        });
        Ok(())
    }

    /// The sanitize running or how the last one ended.
    pub fn sanitize_status(&self) -> SanitizeStatus {
        let st = lock(&self.shared.background.state);
        let mut s = st.sanitize_status;
        if let Some(job) = st
            .sanitize
            .as_ref()
            .filter(|_| s.state == SanitizeState::Running)
        {
            s.progress = (job.progress.fraction() * 65535.0).min(65534.0) as u16;
        }
        s
    }

    /// Calls `cb("self-test")` / `cb("sanitize")` on the operation's
    /// thread when one finishes by itself (None: nobody).
    pub fn set_background_handler(&self, cb: Option<BackgroundCallback>) {
        *lock(&self.shared.background.handler) = cb;
    }

    /// Stops both operations (the engine goes away) and waits for them.
    pub(super) fn stop_background(&self) {
        let jobs = {
            let mut st = lock(&self.shared.background.state);
            [st.test.take(), st.sanitize.take()]
        };
        for mut j in jobs.into_iter().flatten() {
            j.cancel();
        }
    }
}
