//! The guest memory side of the engine's API: DMA regions (fd-backed and
//! remote), the transport that reaches remote ones, and the admin data
//! copies through PRPs.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Engine, EngineError};
use crate::cmd::{prp, segment};
use crate::mem::{DmaTransport, Kind};
use crate::spec::Status;

impl Engine {
    // ---- guest memory ----------------------------------------------------

    /// Maps `size` bytes of `fd` at `offset` as guest memory at `iova`.
    pub fn map_dma(
        &self,
        iova: u64,
        size: u64,
        fd: RawFd,
        offset: u64,
        writable: bool,
    ) -> Result<(), EngineError> {
        Ok(self.shared.mem.map(iova, size, fd, offset, writable)?)
    }

    /// Adds `size` bytes at `iova` as remote guest memory: a region the
    /// client mapped without an fd, read and written through the transport
    /// ([`Engine::set_dma_transport`]). Same overlap and unmap rules as
    /// [`Engine::map_dma`].
    pub fn map_dma_remote(&self, iova: u64, size: u64, writable: bool) -> Result<(), EngineError> {
        Ok(self.shared.mem.map_remote(iova, size, writable)?)
    }

    /// Sets (Some) or removes (None) the transport of remote regions.
    ///
    /// Workers call it for SQ fetches, PRP/SGL lists, data and CQ entries in
    /// remote regions, holding their queue lock: it must not wait for a
    /// thread that is itself blocked in an engine call taking a queue lock
    /// (queue creation and deletion, reset, counters, admin completions).
    /// Without a transport, remote accesses fail as unmapped ones do.
    pub fn set_dma_transport(&self, transport: Option<Arc<dyn DmaTransport>>) {
        self.shared.mem.set_transport(transport);
    }

    /// Removes the mapping (fd-backed or remote) that is exactly `[iova, iova+size)`.
    pub fn unmap_dma(&self, iova: u64, size: u64) -> Result<(), EngineError> {
        Ok(self.shared.mem.unmap(iova, size)?)
    }

    /// Drops every mapping (the transport stays).
    pub fn clear_dma(&self) {
        self.shared.mem.clear();
    }

    /// The current mappings, fd-backed and remote, as (iova, size, writable).
    pub fn dma_regions(&self) -> Vec<(u64, u64, bool)> {
        self.shared.mem.snapshot().regions()
    }

    /// The current mappings as (iova, size, writable, kind): a sealed memfd
    /// (trusted, not guarded), any other fd (guarded), remote, or lost.
    pub fn dma_region_info(&self) -> Vec<(u64, u64, bool, Kind)> {
        self.settle_losses(&self.shared.mem.snapshot());
        self.shared.mem.snapshot().region_info()
    }

    // ---- admin data --------------------------------------------------------

    /// Copies `data` into the host buffer PRP1/PRP2 describe.
    pub fn write_prp(&self, prp1: u64, prp2: u64, data: &[u8]) -> Status {
        let page = self.shared.page_size.load(Ordering::SeqCst);
        let mem = self.shared.mem.snapshot();
        let mut segs = Vec::new();
        if let Err(e) = prp::walk(&mem, prp1, prp2, data.len() as u64, page, true, &mut segs) {
            return e.status();
        }
        // SAFETY: the segments were translated (writable) against `mem`,
        // which stays alive across this copy.
        let copied = unsafe { segment::scatter(&mem, &segs, data) };
        match copied {
            // The buffer shrank under the copy: the data went to zero pages.
            Ok(()) if mem.lost() => {
                self.settle_losses(&mem);
                Status::DATA_TRANSFER_ERROR.dnr()
            }
            Ok(()) => Status::SUCCESS,
            Err(_) => Status::DATA_TRANSFER_ERROR.dnr(),
        }
    }

    /// Copies `len` bytes out of the host buffer PRP1/PRP2 describe.
    pub fn read_prp(&self, prp1: u64, prp2: u64, len: usize) -> (Status, Vec<u8>) {
        let page = self.shared.page_size.load(Ordering::SeqCst);
        let mem = self.shared.mem.snapshot();
        let mut segs = Vec::new();
        if let Err(e) = prp::walk(&mem, prp1, prp2, len as u64, page, false, &mut segs) {
            return (e.status(), Vec::new());
        }
        let mut out = Vec::with_capacity(len);
        // SAFETY: translated against `mem`, alive for this copy.
        match unsafe { segment::gather(&mem, &segs, &mut out) } {
            Ok(()) if mem.lost() => {
                self.settle_losses(&mem);
                (Status::DATA_TRANSFER_ERROR.dnr(), Vec::new())
            }
            Ok(()) => (Status::SUCCESS, out),
            Err(_) => (Status::DATA_TRANSFER_ERROR.dnr(), Vec::new()),
        }
    }
}
