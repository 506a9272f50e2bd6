//! The interrupt side of the engine's API: vectors, MSI-X table and
//! control, MSI/INTx modes, coalescing.

use std::os::fd::RawFd;
use std::sync::Arc;

use super::{lock, Engine, EngineError};
use crate::intx::LevelCallback;
use crate::irq::{dup_eventfd, dup_fd, IrqError, IrqMode, Notifier};

impl Engine {
    // ---- interrupts ------------------------------------------------------

    /// Attaches (Some) or detaches (None) the eventfd of `vector`: it must
    /// be an eventfd, and is made non-blocking (a worker never waits on it:
    /// [`crate::irq::dup_eventfd`]).
    pub fn set_vector_eventfd(&self, vector: u32, fd: Option<RawFd>) -> Result<(), EngineError> {
        Ok(self.shared.vectors.set_eventfd(vector, fd)?)
    }

    /// Routes `vector` to KVM_SIGNAL_MSI on VM fd `vm_fd` (duplicated), with
    /// the message address/data of its MSI-X table entry.
    pub fn set_vector_kvm_msi(&self, vector: u32, vm_fd: RawFd) -> Result<(), EngineError> {
        let vm = dup_fd(vm_fd)?;
        Ok(self
            .shared
            .vectors
            .set_notifier(vector, Some(Notifier::KvmMsi(vm)))?)
    }

    /// Routes `vector` to a callback (run on the worker, no lock held).
    pub fn set_vector_callback(
        &self,
        vector: u32,
        cb: Arc<dyn Fn(u32) + Send + Sync>,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .set_notifier(vector, Some(Notifier::Callback(cb)))?)
    }

    /// Masks or unmasks `vector` (unmask with pending fires once).
    pub fn mask_vector(&self, vector: u32, masked: bool) -> Result<(), EngineError> {
        Ok(self.shared.vectors.set_masked(vector, masked)?)
    }

    /// Vectors with the pending bit set.
    pub fn pending_vectors(&self) -> Vec<u32> {
        self.shared.vectors.pending()
    }

    /// MSI-X table entry `vector`: (address, data, masked).
    pub fn msix_entry(&self, vector: u32) -> Result<(u64, u32, bool), EngineError> {
        Ok(self.shared.vectors.entry(vector)?)
    }

    /// Writes MSI-X table entry `vector`.
    pub fn set_msix_entry(
        &self,
        vector: u32,
        address: u64,
        data: u32,
        masked: bool,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .set_entry(vector, address, data, masked)?)
    }

    /// Dword `field` (0, 4, 8, 12) of MSI-X table entry `vector`.
    pub fn msix_table_dword(&self, vector: u32, field: u32) -> Result<u32, EngineError> {
        Ok(self.shared.vectors.table_dword(vector, field)?)
    }

    /// Writes one dword of a table entry atomically with respect to
    /// `mask_vector` (an unmask with pending delivers once).
    pub fn write_msix_table_dword(
        &self,
        vector: u32,
        field: u32,
        value: u32,
    ) -> Result<(), EngineError> {
        Ok(self
            .shared
            .vectors
            .write_table_dword(vector, field, value)?)
    }

    /// MSI-X Enable and Function Mask.
    pub fn set_msix_control(&self, enabled: bool, function_masked: bool) {
        self.shared.vectors.set_control(enabled, function_masked);
    }

    /// (MSI-X enabled, function masked).
    pub fn msix_control(&self) -> (bool, bool) {
        self.shared.vectors.control()
    }

    /// PCI reset of the MSI-X state (table, PBA, control).
    pub fn msix_reset(&self) {
        self.shared
            .vectors
            .reset(self.shared.cfg.msix_embedder_managed);
    }

    /// MSI-X, MSI or INTx delivery.
    pub fn set_irq_mode(&self, mode: IrqMode) {
        self.shared.vectors.set_mode(mode);
        // The INTx level is computed by the worker: make it look now.
        self.shared.wake_all();
    }

    /// The delivery mode.
    pub fn irq_mode(&self) -> IrqMode {
        self.shared.vectors.mode()
    }

    /// INTMS (set bits mask vectors in MSI mode, the pin in INTx mode).
    pub fn set_interrupt_mask(&self, mask: u32) {
        self.shared.vectors.set_intms(mask);
        self.shared.wake_all();
    }

    /// The INTMS value.
    pub fn interrupt_mask(&self) -> u32 {
        self.shared.vectors.intms()
    }

    /// Wires INTx to a KVM-style eventfd pair (duplicated, checked and made
    /// non-blocking as for [`Engine::set_vector_eventfd`]; None detaches).
    pub fn set_intx_eventfds(
        &self,
        trigger: Option<RawFd>,
        resample: Option<RawFd>,
    ) -> Result<(), EngineError> {
        let t = trigger.map(dup_eventfd).transpose()?;
        let r = resample.map(dup_eventfd).transpose()?;
        lock(&self.shared.intx).set_eventfds(t, r);
        Ok(())
    }

    /// Wires INTx level changes to a callback (run on the worker, no lock held).
    pub fn set_intx_callback(&self, cb: Option<LevelCallback>) {
        lock(&self.shared.intx).set_callback(cb);
    }

    /// True while the INTx line is asserted.
    pub fn intx_asserted(&self) -> bool {
        lock(&self.shared.intx).asserted()
    }

    /// Interrupt Coalescing (Feature 08h): THR (0's based) and TIME (100 us).
    pub fn set_coalescing(&self, thr: u8, time: u8) {
        for w in self.shared.workers.iter() {
            lock(&w.queues).coalesce.set(thr, time);
        }
        self.shared.wake_all();
    }

    /// (THR, TIME).
    pub fn coalescing(&self) -> (u8, u8) {
        lock(&self.shared.workers[0].queues).coalesce.get()
    }

    /// Coalescing Disable (Feature 09h CD) for `vector`.
    pub fn set_coalescing_disabled(&self, vector: u32, disabled: bool) -> Result<(), EngineError> {
        let count = self.shared.vectors.count();
        let v = u16::try_from(vector)
            .ok()
            .filter(|v| *v < count)
            .ok_or(IrqError::BadVector {
                vector,
                count: u32::from(count),
            })?;
        for w in self.shared.workers.iter() {
            lock(&w.queues).coalesce.set_disabled(v, disabled);
        }
        Ok(())
    }
}
