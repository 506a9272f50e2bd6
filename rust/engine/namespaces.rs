//! The namespaces as the control plane sees them: Format NVM, sizes and
//! backing, the volatile write cache, write-back and release of file
//! namespaces, and the wait for file commands in flight.

use std::sync::atomic::Ordering;

use super::{lock, Engine, EngineError, NamespaceInfo, Queues};
use crate::backend::Backend;

impl Engine {
    /// Waits (up to 30 s, with the GIL-free caller's thread) until
    /// `pending` counts nothing on any worker; returns at once when the
    /// workers are stopped (they drain before they exit).
    pub(super) fn wait_files(&self, pending: impl Fn(&Queues) -> usize) {
        if !self.table().files {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.running() && std::time::Instant::now() < deadline {
            let busy: usize = self
                .shared
                .workers
                .iter()
                .map(|w| pending(&lock(&w.queues)))
                .sum();
            if busy == 0 {
                return;
            }
            self.shared.wake_all();
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
    }

    /// Format NVM: namespace `nsid` (1-based) gets `lba_size` and reads as
    /// zeroes. Every worker is held off while it happens.
    pub fn format_namespace(&self, nsid: u32, lba_size: u32) -> Result<(), EngineError> {
        self.format_nvm(nsid, lba_size, crate::pi::Format::NONE)
    }

    /// Format NVM with metadata: namespace `nsid` gets `lba_size` and the
    /// metadata format `fmt`; its data reads as zeroes and every block's
    /// metadata is deallocated (reads back all FFh: the PI escape). Every
    /// worker is held off while it happens.
    pub fn format_nvm(
        &self,
        nsid: u32,
        lba_size: u32,
        fmt: crate::pi::Format,
    ) -> Result<(), EngineError> {
        if !matches!(lba_size, 512 | 4096) {
            return Err(EngineError::Config(format!(
                "lba_size {lba_size} must be 512 or 4096"
            )));
        }
        fmt.validate(lba_size).map_err(EngineError::Config)?;
        let _changing = lock(&self.shared.ns_lock);
        let ns = self
            .shared
            .namespace(nsid)
            .ok_or_else(|| EngineError::Config(format!("namespace {nsid} does not exist")))?;
        if ns.zones.is_some() {
            // As QEMU: a zoned namespace's zones are its format (ZSZE per
            // LBA format); the admin layer answers Invalid Format.
            return Err(EngineError::Config(format!(
                "namespace {nsid} is zoned: Format NVM is not supported on it (Invalid Format)"
            )));
        }
        let _held = self.quiesce();
        ns.format(lba_size).map_err(|e| {
            EngineError::Config(format!(
                "formatting namespace {nsid} failed: {}",
                std::io::Error::from_raw_os_error(e)
            ))
        })?;
        let store = crate::pi::Store::reformat(ns.meta.store(), fmt, ns.lbas(), &ns.backend)
            .map_err(|e| EngineError::Config(format!("formatting namespace {nsid}: {e}")))?;
        if let Some(s) = &store {
            s.set_write_cache(self.write_cache());
        }
        ns.meta.set(fmt, store);
        Ok(())
    }

    /// The metadata format of namespace `nsid`.
    pub fn namespace_format(&self, nsid: u32) -> Option<crate::pi::Format> {
        let ns = self.shared.namespace(nsid)?;
        Some(ns.meta.format())
    }

    /// The size in bytes of namespace `nsid` (a file's, as opened).
    pub fn namespace_size(&self, nsid: u32) -> Option<u64> {
        let ns = self.shared.namespace(nsid)?;
        Some(ns.size_bytes())
    }

    /// What namespace `nsid` is backed by and how.
    pub fn namespace_info(&self, nsid: u32) -> Option<NamespaceInfo> {
        let ns = self.shared.namespace(nsid)?;
        Some(match &ns.backend {
            Backend::File(f) => NamespaceInfo {
                backend: "file",
                size_bytes: ns.size_bytes(),
                path: Some(f.path().to_string()),
                io: f.io_path().name(),
                cache: if f.direct() { "direct" } else { "buffered" },
                readonly: f.readonly(),
            },
            other => NamespaceInfo {
                backend: match other {
                    Backend::Ram(_) => "ram",
                    Backend::Custom(_) => "custom",
                    _ => "null",
                },
                size_bytes: ns.size_bytes(),
                path: None,
                io: if matches!(other, Backend::Custom(_)) {
                    "calls"
                } else {
                    "memory"
                },
                cache: "memory",
                readonly: false,
            },
        })
    }

    /// Makes everything written to the file namespaces durable (fdatasync
    /// of each writable one, through the engine's own descriptors): a
    /// normal shutdown (CC.SHN) calls it. Returns the first error as errno.
    pub fn flush_all(&self) -> Result<(), i32> {
        let mut first = Ok(());
        for (_, ns) in self.table().iter() {
            if let Some(Err(e)) = ns.meta.store().map(|s| s.flush()) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
            if let Some(f) = ns.backend.as_file() {
                if f.readonly() {
                    continue;
                }
                let mut r = f.datasync();
                if let (Ok(()), Some(z)) = (r, &ns.zones) {
                    // The data is durable: the write pointers may say so.
                    r = z.durable_point();
                }
                if let Err(e) = r {
                    // A character device (/dev/full) has nothing to sync.
                    if e != libc::EINVAL && first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }

    /// Stops the workers and lets go of every file namespace's file (its
    /// lock and descriptors), for an engine that will not run again; I/O to
    /// a file namespace afterwards reads zeroes and writes nothing.
    pub fn release_files(&self) {
        self.stop_background();
        self.stop();
        for (_, ns) in self.table().iter() {
            if let Some(f) = ns.backend.as_file() {
                if let (Some(z), false) = (&ns.zones, f.readonly()) {
                    // An orderly close keeps what was written: the data is
                    // synced first, then the write pointers that claim it.
                    if f.datasync().is_ok() {
                        let _ = z.close();
                    }
                }
                f.release();
            }
            // An orderly close: the Write Uncorrectable marks are kept.
            let _ = ns.uncorrectable.flush();
            // The metadata companion goes too (its lock with it).
            if let Some(s) = ns.meta.store() {
                let _ = s.flush();
            }
            ns.meta.set(ns.meta.format(), None);
        }
    }

    /// Volatile Write Cache (Set Features 06h) for every file namespace:
    /// off, each write is durable (RWF_DSYNC) before its completion.
    pub fn set_write_cache(&self, on: bool) {
        for (_, ns) in self.table().iter() {
            ns.cache.set_enabled(on);
            if let Some(s) = ns.meta.store() {
                s.set_write_cache(on);
            }
            if let Some(f) = ns.backend.as_file() {
                f.set_write_cache(on);
            }
        }
        self.shared.write_cache.store(on, Ordering::SeqCst);
    }

    /// The Volatile Write Cache setting.
    pub fn write_cache(&self) -> bool {
        self.shared.write_cache.load(Ordering::SeqCst)
    }

    /// The blocks of namespace `nsid` Write Uncorrectable marked, as
    /// (SLBA, NLB) in LBA order (None: not allocated).
    pub fn uncorrectable_ranges(&self, nsid: u32) -> Option<Vec<(u64, u64)>> {
        let ns = self.shared.namespace(nsid)?;
        Some(ns.uncorrectable.ranges())
    }

    /// The current LBA data size of namespace `nsid`.
    pub fn namespace_lba_size(&self, nsid: u32) -> Option<u32> {
        let ns = self.shared.namespace(nsid)?;
        Some(1 << ns.lba_shift())
    }
}
