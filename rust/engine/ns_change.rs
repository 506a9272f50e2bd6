//! Namespaces changed while the controller serves: added, removed,
//! resized, attached and detached, with I/O running on the others; and the
//! NVM capacity they draw on (TNVMCAP, UNVMCAP, NVMCAP).
//!
//! What a command sees. A command is checked against the namespace when
//! its worker executes it. One fetched before a change completes as it
//! would have without it (a write to a namespace being removed lands in
//! it, a read past a shrinking end reads the old blocks); one fetched
//! after gets the new state: Invalid Field in Command for an NSID that
//! became inactive (Base 2.0 3.2.1.5), LBA Out of Range past a new end.
//! Each call returns only once that boundary holds: after a grace period
//! (every worker's pass in progress has ended) and, for a removal or a
//! shrink, once the commands in flight to the namespace's file have
//! completed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ns_table::{build, capacity_of};
use super::{lock, Engine, EngineError, NamespaceSpec};
use crate::cmd::io::{Namespace, INACTIVE_DETACHED};

/// How long a change waits for commands in flight before it goes on.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The NVM capacity as Identify Controller reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// TNVMCAP.
    pub total_bytes: u64,
    /// What the allocated namespaces take (the sum of their NVMCAP).
    pub allocated_bytes: u64,
}

impl Capacity {
    /// UNVMCAP.
    pub fn unallocated_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.allocated_bytes)
    }
}

/// Bytes a namespace of `spec` will take, when its spec says (a file of
/// its own size says nothing until it is opened).
fn capacity_of_spec(spec: &NamespaceSpec) -> Option<u64> {
    if spec.size_bytes == 0 || !matches!(spec.lba_size, 512 | 4096) {
        return None;
    }
    let lbas = spec.size_bytes / u64::from(spec.lba_size);
    Some(lbas.saturating_mul(u64::from(spec.lba_size) + u64::from(spec.metadata.ms)))
}

/// Lets go of a removed namespace's storage in order: what was written is
/// synced, then the state that claims it (write pointers, metadata, marks).
fn close(ns: &Namespace) {
    if let Some(s) = ns.meta.store() {
        let _ = s.flush();
    }
    let _ = ns.uncorrectable.flush();
    if let Some(f) = ns.backend.as_file() {
        if !f.readonly() && f.datasync().is_ok() {
            if let Some(z) = &ns.zones {
                let _ = z.close();
            }
        }
    }
}

impl Engine {
    /// TNVMCAP and what the allocated namespaces take.
    pub fn capacity(&self) -> Capacity {
        Capacity {
            total_bytes: self.shared.capacity,
            allocated_bytes: self.table().iter().map(|(_, ns)| capacity_of(ns)).sum(),
        }
    }

    /// NVMCAP of namespace `nsid`: its blocks with their metadata.
    pub fn namespace_capacity(&self, nsid: u32) -> Option<u64> {
        self.shared.namespace(nsid).map(|ns| capacity_of(&ns))
    }

    /// NN, the highest NSID.
    pub fn nn(&self) -> u32 {
        self.table().nn()
    }

    /// The allocated NSIDs, ascending.
    pub fn allocated_nsids(&self) -> Vec<u32> {
        self.table().iter().map(|(nsid, _)| nsid).collect()
    }

    /// True when namespace `nsid` is allocated and attached to this
    /// controller (None: not allocated). A namespace of a command set
    /// CC.CSS leaves disabled is attached but inactive.
    pub fn namespace_attached(&self, nsid: u32) -> Option<bool> {
        let ns = self.shared.namespace(nsid)?;
        Some(ns.inactive_reasons() & INACTIVE_DETACHED == 0)
    }

    fn check_capacity(&self, needed: u64, freed: u64) -> Result<(), EngineError> {
        let c = self.capacity();
        let available = c.unallocated_bytes().saturating_add(freed);
        if needed > available {
            return Err(EngineError::Capacity {
                needed,
                available,
                total: c.total_bytes,
            });
        }
        Ok(())
    }

    /// Allocates a namespace as `spec` describes at NSID `nsid` (None: the
    /// lowest free one) and returns its NSID; `attached`: attached to this
    /// controller at once (else it is allocated and inactive until
    /// [`Engine::set_namespace_attached`]). Commands may reach it as soon
    /// as this returns.
    pub fn add_namespace(
        &self,
        spec: &NamespaceSpec,
        nsid: Option<u32>,
        attached: bool,
    ) -> Result<u32, EngineError> {
        let _changing = lock(&self.shared.ns_lock);
        let table = self.table();
        let nn = table.nn();
        let nsid = match nsid {
            Some(n) if n == 0 || n > nn => {
                return Err(EngineError::Namespace(format!(
                    "NSID {n} is out of range: the controller has NSIDs 1..={nn} (NN)"
                )))
            }
            Some(n) if table.get(n).is_some() => {
                return Err(EngineError::Namespace(format!(
                    "NSID {n} is allocated already; remove it first or let the controller pick one"
                )))
            }
            Some(n) => n,
            None => (1..=nn).find(|&n| table.get(n).is_none()).ok_or_else(|| {
                EngineError::Namespace(format!(
                    "every NSID 1..={nn} is allocated (NN); remove a namespace first"
                ))
            })?,
        };
        // Checked before the storage is made where the spec says its size
        // (a file is not created for a namespace that cannot be).
        if let Some(need) = capacity_of_spec(spec) {
            self.check_capacity(need, 0)?;
        }
        let ns = build(spec, nsid)?;
        self.check_capacity(capacity_of(&ns), 0)?;
        if let Some(s) = ns.meta.store() {
            s.set_write_cache(self.write_cache());
        }
        ns.cache.set_enabled(self.write_cache());
        if let Some(f) = ns.backend.as_file() {
            f.set_write_cache(self.write_cache());
        }
        self.shared.apply_css(&ns);
        ns.set_inactive(INACTIVE_DETACHED, !attached);
        // Added while a sanitize runs: held off as the others are (the
        // sanitize ends under ns_lock, which this holds).
        let sanitizing = self.shared.background.sanitizing.load(Ordering::Relaxed);
        ns.set_inactive(crate::cmd::io::INACTIVE_SANITIZE, sanitizing);
        self.shared
            .publish_table(table.with(nsid, Some(Arc::new(ns))));
        // Workers asleep pick the new table up on their next pass anyway;
        // one holding an ioeventfd-less doorbell page needs no more.
        Ok(nsid)
    }

    /// Attaches (`true`) or detaches namespace `nsid` from this controller;
    /// true when that changed. Detached, its NSID is inactive: commands
    /// fetched after this returns get Invalid Field in Command.
    pub fn set_namespace_attached(&self, nsid: u32, attached: bool) -> Result<bool, EngineError> {
        let _changing = lock(&self.shared.ns_lock);
        let ns = self.allocated(nsid)?;
        let before = ns.set_inactive(INACTIVE_DETACHED, !attached);
        let changed = (before & INACTIVE_DETACHED == 0) != attached;
        if changed {
            self.grace();
        }
        Ok(changed)
    }

    fn allocated(&self, nsid: u32) -> Result<Arc<Namespace>, EngineError> {
        self.shared.namespace(nsid).ok_or_else(|| {
            EngineError::Namespace(format!(
                "namespace {nsid} is not allocated; see allocated_nsids()"
            ))
        })
    }

    /// Waits until `done` holds, waking the workers so they reap what the
    /// kernel completed; false when [`DRAIN_LIMIT`] passed first.
    fn drain(&self, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while !done() {
            if Instant::now() >= deadline {
                return false;
            }
            self.shared.wake_all();
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    /// Deallocates namespace `nsid`. Commands fetched before complete
    /// (their result as the storage gives it), those fetched after get
    /// Invalid Field in Command; returns once nothing touches its storage
    /// any more (a file is synced and closed; the image is not deleted).
    pub fn remove_namespace(&self, nsid: u32) -> Result<(), EngineError> {
        let _changing = lock(&self.shared.ns_lock);
        let ns = self.allocated(nsid)?;
        self.namespace_going(nsid);
        let table = self.table();
        self.shared.publish_table(table.with(nsid, None));
        drop(table);
        self.grace();
        // The old table's snapshots are gone with their passes; what is
        // left is commands in flight to its file (each holds a reference)
        // and control-plane calls in progress.
        self.drain(|| Arc::strong_count(&ns) == 1);
        close(&ns);
        Ok(())
    }

    /// Resizes namespace `nsid` to `size_bytes` (a multiple of its LBA
    /// size; of its zone size when zoned). Commands fetched after it
    /// returns see the new NSZE; a shrink waits for the commands in flight
    /// to its file first (a write past the new end would extend it again).
    pub fn resize_namespace(&self, nsid: u32, size_bytes: u64) -> Result<(), EngineError> {
        let _changing = lock(&self.shared.ns_lock);
        let ns = self.allocated(nsid)?;
        let lba = 1u64 << ns.lba_shift();
        if size_bytes == 0 || size_bytes % lba != 0 {
            return Err(EngineError::Config(format!(
                "namespace {nsid}: size_bytes {size_bytes} must be a positive multiple of its LBA \
                 size {lba}"
            )));
        }
        if let Some(why) = ns.backend.fixed_size() {
            return Err(EngineError::Config(format!(
                "namespace {nsid} cannot be resized: {why}"
            )));
        }
        if ns.zones.is_some() {
            return Err(EngineError::Config(format!(
                "namespace {nsid} is zoned: resizing zoned namespaces is not supported yet"
            )));
        }
        let old = ns.size_bytes();
        if size_bytes == old {
            return Ok(());
        }
        let block = lba + u64::from(ns.meta.format().ms);
        let need = (size_bytes / lba).saturating_mul(block);
        self.check_capacity(need, capacity_of(&ns))?;
        let fmt = ns.meta.format();
        let lbas = size_bytes / lba;
        let mut q = self.quiesce();
        // Commands in flight to the file complete first (posted here, under
        // their workers' locks; the workers signal them on their next pass).
        let deadline = Instant::now() + DRAIN_LIMIT;
        while ns.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            for g in q.queues.iter_mut() {
                self.shared.reap_files(g);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        // SAFETY: every worker is held off (between passes) and the storage
        // gate keeps background jobs out: nobody touches the storage's
        // memory during these calls, and commands after them are checked
        // against the new size. (Commands in flight to a file, waited for
        // above, move data through descriptors, never through a mapping.)
        let r = unsafe { ns.backend.resize(size_bytes) }.and_then(|()| match ns.meta.store() {
            // SAFETY: as above.
            Some(s) => unsafe { s.resize(lbas, fmt) },
            None => Ok(()),
        });
        if let Err(e) = r {
            // Put back what moved (a shrink that failed half way).
            // SAFETY: as above.
            let _ = unsafe { ns.backend.resize(old) };
            return Err(EngineError::Config(format!(
                "namespace {nsid} cannot be resized to {size_bytes} bytes: {}",
                std::io::Error::from_raw_os_error(e)
            )));
        }
        ns.set_size(size_bytes);
        if size_bytes < old {
            ns.cache.truncate(size_bytes);
            ns.meta.truncate(lbas);
            let _ = ns.uncorrectable.truncate(lbas);
        }
        drop(q);
        self.shared.wake_all();
        Ok(())
    }

    /// Namespace `nsid` is about to go: background work on it stops.
    fn namespace_going(&self, _nsid: u32) {}
}
