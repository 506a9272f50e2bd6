//! The namespace table: NSID slots 1..=NN, each empty (unallocated) or
//! holding a namespace, published RCU-style as the guest memory map is.
//!
//! Readers (a worker's pass, a control-plane call) load the table once and
//! use that snapshot throughout; a change (add, remove) builds a new table
//! under `ns_lock` and swaps it in. A worker keeps its copy from pass to
//! pass and reloads it only when the table generation moved (a new table
//! was published), so an unchanged table costs a pass one load. A namespace is an `Arc`: the snapshot a
//! pass loaded keeps every namespace in it alive until the pass ends, and a
//! command in flight to a file holds its own reference until it completes,
//! so removing a namespace never frees storage under a command. The writer
//! then waits for both (see [`Engine::grace`] and `remove_namespace`).
//!
//! Changes inside a namespace that commands check per command (its size,
//! whether it is active) are atomics in the namespace; the writer waits a
//! pass of every worker before it reports them done. Changes that move
//! storage under a command (a RAM namespace's mapping moved by a resize)
//! are made with every worker held off ([`Engine::quiesce`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, RwLockWriteGuard};

use super::{lock, Engine, EngineError, NamespaceSpec, Queues, Shared};
use crate::backend::{Backend, FileBackend};
use crate::cmd::io::{Namespace, Slots};

/// The most NSIDs an engine serves (NN up to this).
pub const MAX_NN: u32 = 1024;

/// A worker's copy of the namespace table and the generation it was
/// loaded at ([`Shared::pass_table`]).
#[derive(Default)]
pub(crate) struct TableCache {
    gen: u64,
    table: Option<Arc<NsTable>>,
}

impl TableCache {
    /// Lets go of the cached table: the worker is about to block outside a
    /// pass (in the admin handler), where a namespace removal it causes
    /// would otherwise wait for its own copy. The next pass loads afresh.
    pub(crate) fn release(&mut self) {
        self.table = None;
    }
}

/// One published namespace table.
pub(crate) struct NsTable {
    /// Slot `i`: NSID `i + 1`.
    pub(crate) slots: Box<Slots>,
    /// Some namespace is a file: I/O workers need asynchronous file I/O.
    pub(crate) files: bool,
    /// Some namespace is a file served inline (see `worker::INLINE_PASS`).
    pub(crate) inline: bool,
}

impl NsTable {
    pub(crate) fn new(slots: Box<Slots>) -> NsTable {
        let file = |ns: &Namespace| ns.backend.as_file().map(FileBackend::io_path);
        let mut files = false;
        let mut inline = false;
        for ns in slots.iter().flatten() {
            if let Some(p) = file(ns) {
                files = true;
                inline |= p == crate::aio::IoPath::Inline;
            }
        }
        NsTable {
            slots,
            files,
            inline,
        }
    }

    /// The namespace NSID `nsid` names, active or not.
    pub(crate) fn get(&self, nsid: u32) -> Option<&Arc<Namespace>> {
        self.slots.get(nsid.checked_sub(1)? as usize)?.as_ref()
    }

    /// Every allocated namespace with its NSID, in NSID order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Arc<Namespace>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|ns| (i as u32 + 1, ns)))
    }

    /// NN: the highest NSID.
    pub(crate) fn nn(&self) -> u32 {
        self.slots.len() as u32
    }

    /// A copy with slot `nsid` set to `ns`.
    pub(crate) fn with(&self, nsid: u32, ns: Option<Arc<Namespace>>) -> NsTable {
        let mut slots = self.slots.to_vec();
        slots[(nsid - 1) as usize] = ns;
        NsTable::new(slots.into_boxed_slice())
    }
}

/// The NVM capacity a namespace takes (NVMCAP): every block with its
/// metadata.
pub fn capacity_of(ns: &Namespace) -> u64 {
    let block = (1u64 << ns.lba_shift()) + u64::from(ns.meta.format().ms);
    ns.lbas().saturating_mul(block)
}

/// Opens namespace `nsid` as `spec` describes: its storage, metadata,
/// zones and Write Uncorrectable marks.
pub(crate) fn build(spec: &NamespaceSpec, nsid: u32) -> Result<Namespace, EngineError> {
    if !matches!(spec.lba_size, 512 | 4096) {
        return Err(EngineError::Config(format!(
            "namespace {nsid}: lba_size {} must be 512 or 4096",
            spec.lba_size
        )));
    }
    let from_file = spec.backend == "file" && spec.size_bytes == 0;
    if !from_file && (spec.size_bytes == 0 || spec.size_bytes % u64::from(spec.lba_size) != 0) {
        return Err(EngineError::Config(format!(
            "namespace {nsid}: size_bytes {} must be a positive multiple of lba_size {}",
            spec.size_bytes, spec.lba_size
        )));
    }
    let mut n = Namespace::new(
        Backend::new(
            &spec.backend,
            spec.size_bytes,
            spec.lba_size,
            spec.file.as_ref(),
            spec.storage.as_ref(),
        )?,
        spec.size_bytes,
        spec.lba_size,
    )
    .with_metadata(spec.metadata)
    .map_err(|e| EngineError::Config(format!("namespace {nsid}: {e}")))?;
    super::zoned::attach(&mut n, spec, nsid as usize)?;
    if let Some(f) = n.backend.as_file() {
        if std::fs::metadata(f.path()).is_ok_and(|m| m.is_file()) {
            let path = crate::nsmgmt::uncorrectable::companion_path(f.path());
            n.uncorrectable
                .open(&path, n.lbas())
                .map_err(|e| EngineError::Config(format!("namespace {nsid}: {e}")))?;
        }
    }
    Ok(n)
}

/// Every worker held off (and the background jobs' storage gate shut):
/// no command runs until it is dropped.
pub(super) struct Quiesced<'a> {
    pub(super) queues: Vec<MutexGuard<'a, Queues>>,
    _gate: RwLockWriteGuard<'a, ()>,
}

impl Shared {
    /// Makes `table` the namespace table; workers pick it up at their next
    /// pass.
    pub(crate) fn publish_table(&self, table: NsTable) {
        self.namespaces.store(Arc::new(table));
        // Release: a worker that sees the new generation (Acquire) loads
        // the table stored before it.
        self.table_gen.fetch_add(1, Ordering::Release);
    }

    /// The namespace table for a worker's pass (the caller holds its queue
    /// lock): its copy in `cache`, reloaded only when a new one was
    /// published (loading the ArcSwap every pass cost a QD 1 command about
    /// 130 instructions per pass).
    #[inline]
    pub(super) fn pass_table<'c>(&self, cache: &'c mut TableCache) -> &'c NsTable {
        let gen = self.table_gen.load(Ordering::Acquire);
        if cache.gen != gen {
            cache.table = None;
            cache.gen = gen;
        }
        cache
            .table
            .get_or_insert_with(|| self.namespaces.load_full())
    }

    /// The namespace NSID `nsid` names, active or not.
    pub(crate) fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.namespaces.load().get(nsid).cloned()
    }
}

impl Engine {
    /// The namespace table now.
    pub(crate) fn table(&self) -> Arc<NsTable> {
        self.shared.namespaces.load_full()
    }

    /// Returns once every worker has finished the pass it was in: a pass
    /// that started before a change published with Relaxed or through a
    /// new table has ended (taking a worker's queue lock is an acquire of
    /// what its pass released).
    pub(crate) fn grace(&self) {
        for w in self.shared.workers.iter() {
            drop(lock(&w.queues));
        }
    }

    /// Holds every worker off (between passes) and the background jobs
    /// out of the storage. Lock order: `ns_lock`, then this.
    pub(super) fn quiesce(&self) -> Quiesced<'_> {
        let gate = self
            .shared
            .storage_gate
            .write()
            .unwrap_or_else(|e| e.into_inner());
        Quiesced {
            queues: self
                .shared
                .workers
                .iter()
                .map(|w| lock(&w.queues))
                .collect(),
            _gate: gate,
        }
    }
}
