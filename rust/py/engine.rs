//! `Engine`: the device's hot path as a Python class (see `_core.pyi`).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::callbacks::{loss_notifier, notifier, PyAdminHandler, PyDmaTransport};
use super::errors::{choice, config_err, state_err, to_py, u16_arg};
use super::lifecycle;
use super::maintenance;
use super::namespaces::{self, namespace_spec};
use crate::engine::{AdminHandler, Engine, EngineConfig, Polling};
use crate::irq::{dup_fd, IrqMode};
use crate::mem::DmaTransport;
use crate::spec::Status;

const POLLING: &[(&str, Polling)] = &[
    ("adaptive", Polling::Adaptive),
    ("interrupt", Polling::Interrupt),
    ("poll", Polling::Poll),
];

/// Both ways: `set_irq_mode` parses, `irq_mode` names.
const IRQ_MODES: &[(&str, IrqMode)] = &[
    ("msix", IrqMode::MsiX),
    ("msi", IrqMode::Msi),
    ("intx", IrqMode::Intx),
];

/// The device's hot path (see `_core.pyi`).
#[pyclass(frozen, module = "nvmefast._core", name = "Engine")]
pub(super) struct PyEngine {
    pub(super) inner: Arc<Engine>,
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        // Dealloc holds the GIL, which a worker on its way out needs.
        if self.inner.running() {
            Python::attach(|py| lifecycle::stop(py, &self.inner));
        }
    }
}

#[pymethods]
impl PyEngine {
    #[new]
    #[pyo3(signature = (*, namespaces, msix_vectors, max_qid, max_queue_entries, mdts_bytes, poll_us, msix_embedder_managed=true, polling="adaptive", iothreads=1, affinity=Vec::new(), doorbell_stride=4, cpus=Vec::new(), nn=None, capacity_bytes=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        namespaces: Vec<Bound<'_, PyAny>>,
        msix_vectors: u64,
        max_qid: u64,
        max_queue_entries: u32,
        mdts_bytes: u64,
        poll_us: u64,
        msix_embedder_managed: bool,
        polling: &str,
        iothreads: u16,
        affinity: Vec<u16>,
        doorbell_stride: u32,
        cpus: Vec<usize>,
        nn: Option<u32>,
        capacity_bytes: u64,
    ) -> PyResult<Self> {
        let polling = choice(py, "polling", polling, POLLING)?;
        let cfg = EngineConfig {
            namespaces: namespaces
                .iter()
                .map(|ns| namespace_spec(py, ns))
                .collect::<PyResult<_>>()?,
            nn: nn.unwrap_or(0),
            capacity_bytes,
            msix_vectors: u16_arg(py, "msix_vectors", msix_vectors)?,
            max_qid: u16_arg(py, "max_qid", max_qid)?,
            max_queue_entries,
            mdts_bytes,
            poll_us,
            msix_embedder_managed,
            polling,
            iothreads,
            affinity,
            doorbell_stride,
        };
        let inner = Arc::new(Engine::new(cfg).map_err(|e| to_py(py, e))?);
        inner.set_worker_cpus(cpus).map_err(|e| to_py(py, e))?;
        lifecycle::register(&inner);
        Ok(PyEngine { inner })
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        self.inner
            .start_with(Some(lifecycle::worker_wrapper()))
            .map_err(|e| to_py(py, e))
    }

    fn stop(&self, py: Python<'_>) {
        lifecycle::stop(py, &self.inner);
    }

    fn close(&self, py: Python<'_>) {
        // Reset takes locks a worker stuck in Python at exit may hold.
        if lifecycle::stop(py, &self.inner) {
            py.detach(|| {
                self.inner.reset();
                self.inner.clear_dma();
                // The image lock goes with close(), not with the last
                // Python reference: the file can be served again at once.
                self.inner.release_files();
            });
        }
        self.inner.set_background_handler(None);
        self.inner.set_admin_handler(None);
        self.inner.set_event_handler(None);
        self.inner.set_memory_loss_handler(None);
        self.inner.set_zone_event_handler(None);
        self.inner.set_dma_transport(None);
    }

    #[getter]
    fn running(&self) -> bool {
        self.inner.running()
    }

    fn set_admin_handler(&self, handler: Option<Py<PyAny>>) {
        self.inner.set_admin_handler(
            handler.map(|h| Arc::new(PyAdminHandler(h)) as Arc<dyn AdminHandler>),
        );
    }

    #[pyo3(signature = (iova, size, fd, offset=0, writable=true))]
    fn map_dma(
        &self,
        py: Python<'_>,
        iova: u64,
        size: u64,
        fd: i32,
        offset: u64,
        writable: bool,
    ) -> PyResult<()> {
        self.inner
            .map_dma(iova, size, fd, offset, writable)
            .map_err(|e| to_py(py, e))
    }

    #[pyo3(signature = (iova, size, writable=true))]
    fn map_dma_remote(&self, py: Python<'_>, iova: u64, size: u64, writable: bool) -> PyResult<()> {
        self.inner
            .map_dma_remote(iova, size, writable)
            .map_err(|e| to_py(py, e))
    }

    fn set_dma_transport(
        &self,
        py: Python<'_>,
        read: Option<Py<PyAny>>,
        write: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        for (name, f) in [("read", &read), ("write", &write)] {
            if f.as_ref().is_some_and(|f| !f.bind(py).is_callable()) {
                return Err(config_err(
                    py,
                    format!("DMA {name} callback is not callable"),
                ));
            }
        }
        let t = match (read, write) {
            (None, None) => None,
            (read, write) => {
                Some(Arc::new(PyDmaTransport { read, write }) as Arc<dyn DmaTransport>)
            }
        };
        // The old transport's callables may be dropped here: keep the GIL.
        self.inner.set_dma_transport(t);
        Ok(())
    }

    fn unmap_dma(&self, py: Python<'_>, iova: u64, size: u64) -> PyResult<()> {
        self.inner.unmap_dma(iova, size).map_err(|e| to_py(py, e))
    }

    fn dma_regions(&self) -> Vec<(u64, u64, bool)> {
        self.inner.dma_regions()
    }

    fn dma_region_info(&self) -> Vec<(u64, u64, bool, &'static str)> {
        self.inner
            .dma_region_info()
            .into_iter()
            .map(|(iova, size, writable, kind)| (iova, size, writable, kind.name()))
            .collect()
    }

    fn set_memory_loss_handler(&self, handler: Option<Py<PyAny>>) {
        let cb = handler.map(|h| Arc::new(loss_notifier(h)) as crate::engine::LossCallback);
        self.inner.set_memory_loss_handler(cb);
    }

    fn set_page_size(&self, py: Python<'_>, page_size: u64) -> PyResult<()> {
        self.inner
            .set_page_size(page_size)
            .map_err(|e| to_py(py, e))
    }

    fn reset(&self, py: Python<'_>) {
        py.detach(|| self.inner.reset());
    }

    #[getter]
    fn fatal(&self) -> bool {
        self.inner.fatal()
    }

    fn create_cq(
        &self,
        py: Python<'_>,
        qid: u64,
        iova: u64,
        size: u32,
        vector: u64,
        ien: bool,
    ) -> PyResult<()> {
        let (qid, vector) = (u16_arg(py, "qid", qid)?, u16_arg(py, "vector", vector)?);
        py.detach(|| self.inner.create_cq(qid, iova, size, vector, ien))
            .map_err(|e| to_py(py, e))
    }

    fn create_sq(&self, py: Python<'_>, qid: u64, iova: u64, size: u32, cqid: u64) -> PyResult<()> {
        let (qid, cqid) = (u16_arg(py, "qid", qid)?, u16_arg(py, "cqid", cqid)?);
        py.detach(|| self.inner.create_sq(qid, iova, size, cqid))
            .map_err(|e| to_py(py, e))
    }

    fn delete_sq(&self, py: Python<'_>, qid: u64) -> PyResult<()> {
        let qid = u16_arg(py, "qid", qid)?;
        py.detach(|| self.inner.delete_sq(qid))
            .map_err(|e| to_py(py, e))
    }

    fn delete_cq(&self, py: Python<'_>, qid: u64) -> PyResult<()> {
        let qid = u16_arg(py, "qid", qid)?;
        py.detach(|| self.inner.delete_cq(qid))
            .map_err(|e| to_py(py, e))
    }

    fn sq_exists(&self, py: Python<'_>, qid: u64) -> bool {
        u16::try_from(qid).is_ok_and(|q| py.detach(|| self.inner.sq_exists(q)))
    }

    fn cq_exists(&self, py: Python<'_>, qid: u64) -> bool {
        u16::try_from(qid).is_ok_and(|q| py.detach(|| self.inner.cq_exists(q)))
    }

    fn cq_in_use(&self, py: Python<'_>, qid: u64) -> bool {
        u16::try_from(qid).is_ok_and(|q| py.detach(|| self.inner.cq_in_use(q)))
    }

    fn abort_command(&self, py: Python<'_>, sqid: u64, cid: u64) -> bool {
        match (u16::try_from(sqid), u16::try_from(cid)) {
            // Detached: the SQ scan may go through the DMA transport.
            (Ok(s), Ok(c)) => py.detach(|| self.inner.abort_command(s, c)),
            _ => false,
        }
    }

    #[pyo3(signature = (nsid, lba_size, metadata_size=0, extended_lba=false, pi_type=0, pi_first=false, guard="crc16"))]
    #[allow(clippy::too_many_arguments)]
    fn format_namespace(
        &self,
        py: Python<'_>,
        nsid: u32,
        lba_size: u32,
        metadata_size: u64,
        extended_lba: bool,
        pi_type: u64,
        pi_first: bool,
        guard: &str,
    ) -> PyResult<()> {
        let f = super::pi::format(py, metadata_size, extended_lba, pi_type, pi_first, guard)?;
        py.detach(|| self.inner.format_nvm(nsid, lba_size, f))
            .map_err(|e| to_py(py, e))
    }

    fn namespace_format<'py>(&self, py: Python<'py>, nsid: u32) -> PyResult<Bound<'py, PyDict>> {
        let (Some(f), Some(lba)) = (
            self.inner.namespace_format(nsid),
            self.inner.namespace_lba_size(nsid),
        ) else {
            return Err(config_err(py, format!("namespace {nsid} does not exist")));
        };
        super::pi::to_dict(py, lba, f)
    }

    fn namespace_lba_size(&self, py: Python<'_>, nsid: u32) -> PyResult<u32> {
        self.inner
            .namespace_lba_size(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))
    }

    fn doorbell_page_fd(&self, py: Python<'_>) -> PyResult<(i32, usize, usize)> {
        use std::os::fd::IntoRawFd;
        let (fd, offset, len) = self.inner.doorbell_page();
        let owned = dup_fd(fd).map_err(|e| state_err(py, e.to_string()))?;
        Ok((owned.into_raw_fd(), offset, len))
    }

    fn set_doorbell_scan(&self, us: u64) {
        self.inner.set_doorbell_scan(us);
    }

    fn doorbell_scan(&self) -> u64 {
        self.inner.doorbell_scan()
    }

    fn set_doorbell_eventfd(&self, py: Python<'_>, index: u32, fd: Option<i32>) -> PyResult<()> {
        self.inner
            .set_doorbell_eventfd(index, fd)
            .map_err(|e| to_py(py, e))
    }

    fn set_shadow_doorbells(&self, py: Python<'_>, db: u64, ei: u64) -> u16 {
        py.detach(|| self.inner.set_shadow_doorbells(db, ei))
            .field()
    }

    #[getter]
    fn shadow_doorbells(&self) -> Option<(u64, u64)> {
        self.inner.shadow_doorbells()
    }

    fn set_event_handler(&self, handler: Option<Py<PyAny>>) {
        let cb = handler.map(|h| Arc::new(notifier::<u8>(h)) as crate::engine::EventCallback);
        self.inner.set_event_handler(cb);
    }

    fn iothread_of(&self, qid: u64) -> Option<usize> {
        u16::try_from(qid)
            .ok()
            .and_then(|q| self.inner.iothread_of(q))
    }

    fn doorbell_write(&self, index: u64, value: u64) -> Option<u8> {
        // Out-of-range indexes and values are guest input: the core reports
        // them as an AER code, never an exception.
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let value = u32::try_from(value).unwrap_or(u32::MAX);
        self.inner
            .doorbell_write(index, value)
            .err()
            .map(|e| e.aer_info())
    }

    fn write_prp(&self, py: Python<'_>, prp1: u64, prp2: u64, data: Vec<u8>) -> u16 {
        py.detach(|| self.inner.write_prp(prp1, prp2, &data))
            .field()
    }

    fn read_prp<'py>(
        &self,
        py: Python<'py>,
        prp1: u64,
        prp2: u64,
        length: usize,
    ) -> (u16, Bound<'py, PyBytes>) {
        let (s, data) = py.detach(|| self.inner.read_prp(prp1, prp2, length));
        (s.field(), PyBytes::new(py, &data))
    }

    #[pyo3(signature = (cid, status, dw0=0, dw1=0))]
    fn complete_admin(
        &self,
        py: Python<'_>,
        cid: u64,
        status: u16,
        dw0: u32,
        dw1: u32,
    ) -> PyResult<()> {
        let cid = u16_arg(py, "cid", cid)?;
        py.detach(|| {
            self.inner
                .complete_admin(cid, Status::from_field(status), dw0, dw1)
        })
        .map_err(|e| to_py(py, e))
    }

    fn drop_deferred(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.drop_deferred())
    }

    fn set_vector_eventfd(&self, py: Python<'_>, vector: u32, fd: Option<i32>) -> PyResult<()> {
        self.inner
            .set_vector_eventfd(vector, fd)
            .map_err(|e| to_py(py, e))
    }

    fn mask_vector(&self, py: Python<'_>, vector: u32, masked: bool) -> PyResult<()> {
        self.inner
            .mask_vector(vector, masked)
            .map_err(|e| to_py(py, e))
    }

    fn pending_vectors(&self) -> Vec<u32> {
        self.inner.pending_vectors()
    }

    fn set_vector_kvm_msi(&self, py: Python<'_>, vector: u32, vm_fd: i32) -> PyResult<()> {
        self.inner
            .set_vector_kvm_msi(vector, vm_fd)
            .map_err(|e| to_py(py, e))
    }

    fn set_vector_callback(
        &self,
        py: Python<'_>,
        vector: u32,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let r = match callback {
            None => self.inner.set_vector_eventfd(vector, None),
            Some(cb) => self
                .inner
                .set_vector_callback(vector, Arc::new(notifier::<u32>(cb))),
        };
        r.map_err(|e| to_py(py, e))
    }

    fn msix_entry(&self, py: Python<'_>, vector: u32) -> PyResult<(u64, u32, bool)> {
        self.inner.msix_entry(vector).map_err(|e| to_py(py, e))
    }

    fn set_msix_entry(
        &self,
        py: Python<'_>,
        vector: u32,
        address: u64,
        data: u32,
        masked: bool,
    ) -> PyResult<()> {
        self.inner
            .set_msix_entry(vector, address, data, masked)
            .map_err(|e| to_py(py, e))
    }

    fn msix_table_dword(&self, py: Python<'_>, vector: u32, field: u32) -> PyResult<u32> {
        self.inner
            .msix_table_dword(vector, field)
            .map_err(|e| to_py(py, e))
    }

    fn write_msix_table_dword(
        &self,
        py: Python<'_>,
        vector: u32,
        field: u32,
        value: u32,
    ) -> PyResult<()> {
        self.inner
            .write_msix_table_dword(vector, field, value)
            .map_err(|e| to_py(py, e))
    }

    fn set_msix_control(&self, enabled: bool, function_masked: bool) {
        self.inner.set_msix_control(enabled, function_masked);
    }

    fn msix_control(&self) -> (bool, bool) {
        self.inner.msix_control()
    }

    fn msix_reset(&self) {
        self.inner.msix_reset();
    }

    fn set_irq_mode(&self, py: Python<'_>, mode: &str) -> PyResult<()> {
        self.inner
            .set_irq_mode(choice(py, "irq mode", mode, IRQ_MODES)?);
        Ok(())
    }

    #[getter]
    fn irq_mode(&self) -> &'static str {
        let mode = self.inner.irq_mode();
        IRQ_MODES
            .iter()
            .find(|(_, m)| *m == mode)
            .map_or("msix", |(name, _)| name)
    }

    fn set_interrupt_mask(&self, mask: u32) {
        self.inner.set_interrupt_mask(mask);
    }

    #[getter]
    fn interrupt_mask(&self) -> u32 {
        self.inner.interrupt_mask()
    }

    #[pyo3(signature = (trigger, resample=None))]
    fn set_intx_eventfds(
        &self,
        py: Python<'_>,
        trigger: Option<i32>,
        resample: Option<i32>,
    ) -> PyResult<()> {
        self.inner
            .set_intx_eventfds(trigger, resample)
            .map_err(|e| to_py(py, e))
    }

    fn set_intx_callback(&self, callback: Option<Py<PyAny>>) {
        let cb = callback.map(|cb| Arc::new(notifier::<bool>(cb)) as crate::intx::LevelCallback);
        self.inner.set_intx_callback(cb);
    }

    #[getter]
    fn intx_asserted(&self) -> bool {
        self.inner.intx_asserted()
    }

    fn set_coalescing(&self, py: Python<'_>, thr: u8, time: u8) {
        py.detach(|| self.inner.set_coalescing(thr, time));
    }

    fn coalescing(&self, py: Python<'_>) -> (u8, u8) {
        py.detach(|| self.inner.coalescing())
    }

    fn set_coalescing_disabled(&self, py: Python<'_>, vector: u32, disabled: bool) -> PyResult<()> {
        py.detach(|| self.inner.set_coalescing_disabled(vector, disabled))
            .map_err(|e| to_py(py, e))
    }

    /// Starts the command trace into a ring of `capacity` records.
    fn trace_start(&self, py: Python<'_>, capacity: usize) -> PyResult<()> {
        if !(1..=1 << 24).contains(&capacity) {
            return Err(config_err(
                py,
                format!("trace capacity {capacity} must be in 1..=16777216 records"),
            ));
        }
        self.inner.trace().start(capacity);
        Ok(())
    }

    /// The fault rule table (`FaultTable`).
    fn faults(&self) -> super::faults::PyFaultTable {
        super::faults::PyFaultTable {
            inner: Arc::clone(&self.inner),
        }
    }

    fn trace_stop(&self) {
        self.inner.trace().stop();
    }

    fn trace_on(&self) -> bool {
        self.inner.trace().on()
    }

    /// Takes up to `max` records, oldest first.
    fn trace_drain<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let recs = py.detach(|| self.inner.trace().drain(max));
        recs.iter()
            .map(|r| super::trace::record_dict(py, r))
            .collect()
    }

    fn trace_dropped(&self) -> u64 {
        self.inner.trace().dropped()
    }

    /// Records a BAR0 write the embedder handled (registers are Python's).
    fn trace_register(&self, offset: u64, value: u64) {
        let t = self.inner.trace();
        if t.on() {
            t.register(offset, value);
        }
    }

    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in py.detach(|| self.inner.counters()) {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn smart<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.smart());
        let d = PyDict::new(py);
        d.set_item("bytes_read", s.bytes_read)?;
        d.set_item("bytes_written", s.bytes_written)?;
        // Data units are thousands of 512-byte units, rounded up (Figure 207).
        d.set_item("data_units_read", (s.bytes_read / 512).div_ceil(1000))?;
        d.set_item("data_units_written", (s.bytes_written / 512).div_ceil(1000))?;
        d.set_item("host_read_commands", s.host_read_commands)?;
        d.set_item("host_write_commands", s.host_write_commands)?;
        d.set_item("media_errors", s.media_errors)?;
        Ok(d)
    }

    fn namespace_size(&self, py: Python<'_>, nsid: u32) -> PyResult<u64> {
        self.inner
            .namespace_size(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))
    }

    fn namespace_info<'py>(&self, py: Python<'py>, nsid: u32) -> PyResult<Bound<'py, PyDict>> {
        let i = self
            .inner
            .namespace_info(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))?;
        let d = PyDict::new(py);
        d.set_item("backend", i.backend)?;
        d.set_item("size_bytes", i.size_bytes)?;
        d.set_item("path", i.path)?;
        d.set_item("io", i.io)?;
        d.set_item("cache", i.cache)?;
        d.set_item("readonly", i.readonly)?;
        Ok(d)
    }

    fn flush_all(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.flush_all()).map_err(|e| {
            config_err(
                py,
                format!(
                    "writing back the file namespaces failed: {}",
                    std::io::Error::from_raw_os_error(e)
                ),
            )
        })
    }

    fn set_write_cache(&self, enabled: bool) {
        self.inner.set_write_cache(enabled);
    }

    fn write_cache(&self) -> bool {
        self.inner.write_cache()
    }

    fn zone_geometry<'py>(
        &self,
        py: Python<'py>,
        nsid: u32,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        super::zones::geometry(py, &self.inner, nsid)
    }

    fn zone_report(&self, py: Python<'_>, nsid: u32) -> Option<Vec<crate::engine::ZoneRow>> {
        py.detach(|| self.inner.zone_report(nsid))
    }

    #[pyo3(signature = (nsid, clear=true))]
    fn take_changed_zones(
        &self,
        py: Python<'_>,
        nsid: u32,
        clear: bool,
    ) -> Option<(Vec<u64>, bool)> {
        py.detach(|| self.inner.take_changed_zones(nsid, clear))
    }

    fn set_zone_event_handler(&self, handler: Option<Py<PyAny>>) {
        super::zones::set_handler(&self.inner, handler);
    }

    fn zone_action(&self, py: Python<'_>, nsid: u32, zone: u32, action: &str) -> PyResult<bool> {
        super::zones::action(py, &self.inner, nsid, zone, action)
    }

    fn set_io_command_sets(&self, nvm: bool, zoned: bool) {
        self.inner.set_io_command_sets(nvm, zoned);
    }

    #[pyo3(signature = (namespace, nsid=None, attached=true))]
    fn add_namespace(
        &self,
        py: Python<'_>,
        namespace: &Bound<'_, PyAny>,
        nsid: Option<u32>,
        attached: bool,
    ) -> PyResult<u32> {
        namespaces::add(py, &self.inner, namespace, nsid, attached)
    }

    fn remove_namespace(&self, py: Python<'_>, nsid: u32) -> PyResult<()> {
        py.detach(|| self.inner.remove_namespace(nsid))
            .map_err(|e| to_py(py, e))
    }

    fn resize_namespace(&self, py: Python<'_>, nsid: u32, size_bytes: u64) -> PyResult<()> {
        py.detach(|| self.inner.resize_namespace(nsid, size_bytes))
            .map_err(|e| to_py(py, e))
    }

    fn set_namespace_attached(&self, py: Python<'_>, nsid: u32, attached: bool) -> PyResult<bool> {
        py.detach(|| self.inner.set_namespace_attached(nsid, attached))
            .map_err(|e| to_py(py, e))
    }

    fn namespace_attached(&self, nsid: u32) -> Option<bool> {
        self.inner.namespace_attached(nsid)
    }

    fn allocated_nsids(&self) -> Vec<u32> {
        self.inner.allocated_nsids()
    }

    #[getter]
    fn nn(&self) -> u32 {
        self.inner.nn()
    }

    fn capacity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        namespaces::capacity(py, &self.inner)
    }

    fn namespace_capacity(&self, py: Python<'_>, nsid: u32) -> PyResult<u64> {
        self.inner
            .namespace_capacity(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))
    }

    #[pyo3(signature = (nsids, extended, min_seconds = 0.0))]
    fn self_test_start(
        &self,
        py: Python<'_>,
        nsids: Vec<u32>,
        extended: bool,
        min_seconds: f64,
    ) -> PyResult<()> {
        maintenance::self_test_start(py, &self.inner, nsids, extended, min_seconds)
    }

    fn self_test_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        maintenance::self_test_status(py, &self.inner)
    }

    fn self_test_abort(&self, py: Python<'_>) -> bool {
        py.detach(|| self.inner.self_test_abort())
    }

    #[pyo3(signature = (action, pattern = 0, passes = 1, invert = false, deallocate = true, min_seconds = 0.0))]
    #[allow(clippy::too_many_arguments)]
    fn sanitize_start(
        &self,
        py: Python<'_>,
        action: &str,
        pattern: u32,
        passes: u32,
        invert: bool,
        deallocate: bool,
        min_seconds: f64,
    ) -> PyResult<()> {
        maintenance::sanitize_start(
            py,
            &self.inner,
            action,
            pattern,
            passes,
            invert,
            deallocate,
            min_seconds,
        )
    }

    fn sanitize_status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        maintenance::sanitize_status(py, &self.inner)
    }

    fn set_background_handler(&self, handler: Option<Py<PyAny>>) {
        maintenance::set_background_handler(&self.inner, handler);
    }

    fn uncorrectable_ranges(&self, py: Python<'_>, nsid: u32) -> PyResult<Vec<(u64, u64)>> {
        self.inner
            .uncorrectable_ranges(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))
    }

    fn take_errors(&self, py: Python<'_>) -> Vec<(u16, u16, u16, u16, u64, u32)> {
        py.detach(|| self.inner.take_errors())
            .into_iter()
            .map(|e| {
                (
                    e.sqid,
                    e.cid,
                    e.failure.status.field(),
                    e.failure.param_loc,
                    e.failure.lba,
                    e.failure.nsid,
                )
            })
            .collect()
    }
}
