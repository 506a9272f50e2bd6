//! The pyo3 bindings: thin, typed, one error mapping. Everything that waits
//! for the worker, or takes a worker's queue lock, releases the GIL
//! (`py.detach`), or it would deadlock with a worker that needs the GIL to
//! run an admin handler or a DMA transport callback under that lock.

use std::sync::Arc;

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple, PyType};

use crate::driver::{bench, floor, irqcost, ring, HostMemory, HostQueue};
use crate::engine::{
    AdminHandler, AdminOutcome, Engine, EngineConfig, EngineError, NamespaceSpec, Polling,
};
use crate::irq::{dup_fd, IrqMode, Notifier};
use crate::mem::DmaTransport;
use crate::spec::{Sqe, Status};

mod lifecycle;

/// The exception classes, created at import so that `ConfigError` can also
/// be a `ValueError` (pyo3's create_exception! takes one base).
struct Exceptions {
    base: Py<PyType>,
    config: Py<PyType>,
    dma: Py<PyType>,
    register: Py<PyType>,
    vector: Py<PyType>,
    queue: Py<PyType>,
    state: Py<PyType>,
}

static EXC: PyOnceLock<Exceptions> = PyOnceLock::new();

fn make_type(
    py: Python<'_>,
    name: &str,
    doc: &str,
    bases: Vec<Bound<'_, PyType>>,
) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "nvmefast")?;
    ns.set_item("__doc__", doc)?;
    let ty = py
        .import("builtins")?
        .getattr("type")?
        .call1((name, PyTuple::new(py, bases)?, ns))?;
    Ok(ty.cast_into::<PyType>()?.unbind())
}

fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
    EXC.get_or_try_init(py, || {
        let base = make_type(
            py,
            "NvmeFastError",
            "Root of every error nvmefast raises.",
            vec![py.get_type::<PyException>()],
        )?;
        let b = || base.bind(py).clone();
        Ok(Exceptions {
            config: make_type(
                py,
                "ConfigError",
                "A configuration value is out of range or inconsistent.",
                vec![b(), py.get_type::<PyValueError>()],
            )?,
            dma: make_type(
                py,
                "DmaMapError",
                "A DMA map/unmap request is invalid (overlap, bad fd, size, alignment).",
                vec![b()],
            )?,
            register: make_type(
                py,
                "RegisterAccessError",
                "A BAR0 access the embedder should never make (bad size, offset past BAR0).",
                vec![b()],
            )?,
            vector: make_type(
                py,
                "VectorError",
                "An interrupt vector number or notifier fd is invalid.",
                vec![b()],
            )?,
            queue: make_type(
                py,
                "QueueError",
                "A queue operation on the core is invalid (qid in use, unknown CQ, ...).",
                vec![b()],
            )?,
            state: make_type(
                py,
                "StateError",
                "The object is in the wrong state for the call (closed, not running, ...).",
                vec![b()],
            )?,
            base,
        })
    })
}

fn raise(py: Python<'_>, pick: impl Fn(&Exceptions) -> &Py<PyType>, msg: String) -> PyErr {
    match exceptions(py) {
        Ok(e) => PyErr::from_type(pick(e).bind(py).clone(), msg),
        Err(e) => e,
    }
}

/// The one mapping from core errors to Python exceptions.
fn to_py(py: Python<'_>, e: EngineError) -> PyErr {
    let msg = e.to_string();
    match e {
        EngineError::Config(_) | EngineError::Backend(_) => raise(py, |x| &x.config, msg),
        EngineError::Mem(_) => raise(py, |x| &x.dma, msg),
        EngineError::Queue(_) | EngineError::NotDeferred { .. } => raise(py, |x| &x.queue, msg),
        EngineError::Irq(_) | EngineError::Waker(_) | EngineError::BadDoorbell { .. } => {
            raise(py, |x| &x.vector, msg)
        }
        EngineError::Spawn(_) => raise(py, |x| &x.state, msg),
    }
}

fn config_err(py: Python<'_>, msg: String) -> PyErr {
    raise(py, |x| &x.config, msg)
}

fn u16_arg(py: Python<'_>, what: &str, v: u64) -> PyResult<u16> {
    u16::try_from(v).map_err(|_| config_err(py, format!("{what} {v} does not fit 16 bits")))
}

/// Calls the Python admin handler on the worker thread.
struct PyAdminHandler(Py<PyAny>);

impl AdminHandler for PyAdminHandler {
    fn handle(&self, sqe: &Sqe) -> AdminOutcome {
        let internal = AdminOutcome::Complete {
            status: Status::INTERNAL_ERROR.dnr(),
            dw0: 0,
        };
        // The interpreter is exiting: leave the command outstanding, as a
        // controller losing power would.
        lifecycle::call_python(|py| {
            let bytes = PyBytes::new(py, &sqe.to_bytes());
            match lifecycle::call(self.0.bind(py), (bytes,)) {
                Ok(r) if r.is_none() => AdminOutcome::Deferred,
                Ok(r) => match r.extract::<(u16, u32)>() {
                    Ok((status, dw0)) => AdminOutcome::Complete {
                        status: Status::from_field(status),
                        dw0,
                    },
                    Err(e) => {
                        e.print(py);
                        internal
                    }
                },
                Err(e) => {
                    e.print(py);
                    internal
                }
            }
        })
        .unwrap_or(AdminOutcome::Deferred)
    }
}

/// Why a DMA access failed once the interpreter is finalizing.
const EXITING: &str = "the Python interpreter is exiting";

/// Remote guest memory through Python callables, called on worker threads.
///
/// Workers run detached from Python; each call attaches for the callable
/// only. The callable may block (a vfio-user round trip) and releases the
/// GIL while it waits, as any blocking Python call does; the bindings that
/// take a worker's queue lock detach first, so a worker holding its lock
/// and waiting for the GIL cannot deadlock against them. An exception is
/// printed, like the admin handler's, and fails the access.
struct PyDmaTransport {
    read: Option<Py<PyAny>>,
    write: Option<Py<PyAny>>,
}

impl DmaTransport for PyDmaTransport {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), String> {
        let f = self.read.as_ref().ok_or("no DMA read callback is set")?;
        lifecycle::call_python(|py| {
            let data = lifecycle::call(f.bind(py), (iova, buf.len()))
                .and_then(|r| r.extract::<PyBackedBytes>().map_err(PyErr::from))
                .map_err(|e| {
                    let msg = e.to_string();
                    e.print(py);
                    msg
                })?;
            if data.len() != buf.len() {
                return Err(format!(
                    "DMA read callback returned {} bytes for {} at {iova:#x}",
                    data.len(),
                    buf.len()
                ));
            }
            buf.copy_from_slice(&data);
            Ok(())
        })
        .unwrap_or_else(|| Err(EXITING.to_string()))
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), String> {
        let f = self.write.as_ref().ok_or("no DMA write callback is set")?;
        lifecycle::call_python(|py| {
            lifecycle::call(f.bind(py), (iova, PyBytes::new(py, data)))
                .map(drop)
                .map_err(|e| {
                    let msg = e.to_string();
                    e.print(py);
                    msg
                })
        })
        .unwrap_or_else(|| Err(EXITING.to_string()))
    }
}

/// The device's hot path (see `_core.pyi`).
#[pyclass(frozen, module = "nvmefast._core", name = "Engine")]
struct PyEngine {
    inner: Arc<Engine>,
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
    #[pyo3(signature = (*, namespaces, msix_vectors, max_qid, max_queue_entries, mdts_bytes, poll_us, msix_embedder_managed=true, polling="adaptive", iothreads=1, affinity=Vec::new(), doorbell_stride=4))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        namespaces: Vec<(u64, u32, String)>,
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
    ) -> PyResult<Self> {
        let polling = match polling {
            "adaptive" => Polling::Adaptive,
            "interrupt" => Polling::Interrupt,
            "poll" => Polling::Poll,
            other => {
                return Err(config_err(
                    py,
                    format!("polling {other:?} must be \"adaptive\", \"interrupt\" or \"poll\""),
                ))
            }
        };
        let cfg = EngineConfig {
            namespaces: namespaces
                .into_iter()
                .map(|(size_bytes, lba_size, backend)| NamespaceSpec {
                    size_bytes,
                    lba_size,
                    backend,
                })
                .collect(),
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
            });
        }
        self.inner.set_admin_handler(None);
        self.inner.set_event_handler(None);
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

    fn format_namespace(&self, py: Python<'_>, nsid: u32, lba_size: u32) -> PyResult<()> {
        py.detach(|| self.inner.format_namespace(nsid, lba_size))
            .map_err(|e| to_py(py, e))
    }

    fn namespace_lba_size(&self, py: Python<'_>, nsid: u32) -> PyResult<u32> {
        self.inner
            .namespace_lba_size(nsid)
            .ok_or_else(|| config_err(py, format!("namespace {nsid} does not exist")))
    }

    fn doorbell_page_fd(&self, py: Python<'_>) -> PyResult<(i32, usize, usize)> {
        use std::os::fd::IntoRawFd;
        let (fd, offset, len) = self.inner.doorbell_page();
        let owned = dup_fd(fd).map_err(|e| raise(py, |x| &x.state, e.to_string()))?;
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
        let cb = handler.map(|h| {
            Arc::new(move |info: u8| {
                lifecycle::call_python(|py| {
                    if let Err(e) = lifecycle::call(h.bind(py), (info,)) {
                        e.print(py);
                    }
                });
            }) as crate::engine::EventCallback
        });
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

    #[pyo3(signature = (cid, status, dw0=0))]
    fn complete_admin(&self, py: Python<'_>, cid: u64, status: u16, dw0: u32) -> PyResult<()> {
        let cid = u16_arg(py, "cid", cid)?;
        py.detach(|| {
            self.inner
                .complete_admin(cid, Status::from_field(status), dw0)
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
            Some(cb) => {
                let f = move |v: u32| {
                    lifecycle::call_python(|py| {
                        if let Err(e) = lifecycle::call(cb.bind(py), (v,)) {
                            e.print(py);
                        }
                    });
                };
                self.inner.set_vector_callback(vector, Arc::new(f))
            }
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
        let m = match mode {
            "msix" => IrqMode::MsiX,
            "msi" => IrqMode::Msi,
            "intx" => IrqMode::Intx,
            other => {
                return Err(config_err(
                    py,
                    format!("irq mode {other:?} must be \"msix\", \"msi\" or \"intx\""),
                ))
            }
        };
        self.inner.set_irq_mode(m);
        Ok(())
    }

    #[getter]
    fn irq_mode(&self) -> &'static str {
        match self.inner.irq_mode() {
            IrqMode::MsiX => "msix",
            IrqMode::Msi => "msi",
            IrqMode::Intx => "intx",
        }
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
        let cb = callback.map(|cb| {
            Arc::new(move |level: bool| {
                lifecycle::call_python(|py| {
                    if let Err(e) = lifecycle::call(cb.bind(py), (level,)) {
                        e.print(py);
                    }
                });
            }) as crate::intx::LevelCallback
        });
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

/// Drives one queue pair with random reads from a Rust host thread.
#[pyfunction]
#[pyo3(signature = (engine, *, mem_fd, mem_iova, mem_size, sqid, sq_iova, cq_iova, qsize, buf_iova, nsid, ns_lbas, lba_size, block_size, qd, seconds, mode, eventfd, workload="randread", ring_each=false, doorbell="mmio", shadow=None, page_fd=None, doorbell_eventfds=None, doorbell_stride=4))]
#[allow(clippy::too_many_arguments)]
fn bench_io<'py>(
    py: Python<'py>,
    engine: &Bound<'py, PyEngine>,
    mem_fd: i32,
    mem_iova: u64,
    mem_size: usize,
    sqid: u64,
    sq_iova: u64,
    cq_iova: u64,
    qsize: u32,
    buf_iova: u64,
    nsid: u32,
    ns_lbas: u64,
    lba_size: u32,
    block_size: u32,
    qd: u32,
    seconds: f64,
    mode: &str,
    eventfd: Option<i32>,
    workload: &str,
    ring_each: bool,
    doorbell: &str,
    shadow: Option<(u64, u64)>,
    page_fd: Option<(i32, usize, usize)>,
    doorbell_eventfds: Option<(i32, i32)>,
    doorbell_stride: usize,
) -> PyResult<Bound<'py, PyDict>> {
    if !matches!(doorbell, "mmio" | "shadow" | "page" | "ioeventfd") {
        return Err(config_err(
            py,
            format!(
                "doorbell {doorbell:?} must be \"mmio\", \"shadow\", \"page\" or \"ioeventfd\""
            ),
        ));
    }
    // The host loop builds atomics on these addresses and divides by the
    // LBA size: refuse what would make that undefined or panic.
    if sq_iova % 64 != 0 || cq_iova % 16 != 0 || buf_iova % 4096 != 0 {
        return Err(config_err(
            py,
            "sq_iova, cq_iova and buf_iova must be 64-, 16- and 4096-byte aligned".to_string(),
        ));
    }
    if !doorbell_stride.is_power_of_two() || doorbell_stride < 4 {
        return Err(config_err(
            py,
            format!("doorbell_stride {doorbell_stride} must be a power of two of at least 4"),
        ));
    }
    if !matches!(lba_size, 512 | 4096) || block_size == 0 || block_size % lba_size != 0 {
        return Err(config_err(
            py,
            format!("lba_size {lba_size} must be 512 or 4096 and divide block_size {block_size}"),
        ));
    }
    let need = |ok: bool, what: &str| -> PyResult<()> {
        if ok {
            Ok(())
        } else {
            Err(config_err(
                py,
                format!("doorbell {doorbell:?} needs {what}"),
            ))
        }
    };
    need(
        doorbell != "shadow" || shadow.is_some(),
        "shadow=(db_iova, ei_iova)",
    )?;
    need(
        !matches!(doorbell, "page" | "ioeventfd") || page_fd.is_some(),
        "page_fd=(fd, offset, length)",
    )?;
    need(
        doorbell != "ioeventfd" || doorbell_eventfds.is_some(),
        "doorbell_eventfds=(sq_fd, cq_fd)",
    )?;
    let workload = match workload {
        "randread" => bench::Workload::RandRead,
        "fill" => bench::Workload::Fill,
        w => {
            return Err(config_err(
                py,
                format!("workload {w:?} must be \"randread\" or \"fill\""),
            ))
        }
    };
    let mode = match mode {
        "irq" => bench::Mode::Irq,
        "poll" => bench::Mode::Poll,
        m => {
            return Err(config_err(
                py,
                format!("mode {m:?} must be \"irq\" or \"poll\""),
            ))
        }
    };
    if !(seconds > 0.0 && seconds < 3600.0) {
        return Err(config_err(
            py,
            format!("seconds {seconds} must be in (0, 3600)"),
        ));
    }
    let sqid = u16_arg(py, "sqid", sqid)?;
    let eng = &engine.get().inner;
    let params = bench::Params {
        workload,
        nsid,
        ns_lbas,
        lba_size,
        block_size,
        qd,
        seconds,
        mode,
        eventfd,
        buf_iova,
        ring_each,
    };
    let r = py.detach(|| -> Result<bench::Outcome, String> {
        let mem = HostMemory::from_fd(mem_fd, mem_size, mem_iova).map_err(|e| e.to_string())?;
        let page = match page_fd {
            Some((fd, offset, len)) => {
                let m = HostMemory::from_fd_at(fd, offset, len, 0).map_err(|e| e.to_string())?;
                Some(m)
            }
            None => None,
        };
        let mut q = HostQueue::new(&mem, sqid, qsize, sq_iova, cq_iova);
        let span = 2 * (usize::from(sqid) + 1) * doorbell_stride;
        q.ringer = ring::Ringer::new(match (doorbell, shadow, &page, doorbell_eventfds) {
            ("shadow", Some((db, ei)), _, _) => ring::Ring::Shadow {
                db: mem.ptr(db, span),
                ei: mem.ptr(ei, span),
                stride: doorbell_stride,
            },
            ("page", _, Some(p), _) => ring::Ring::Page {
                page: p.ptr(0, span),
                stride: doorbell_stride,
            },
            ("ioeventfd", _, Some(p), Some((sq_fd, cq_fd))) => ring::Ring::Ioeventfd {
                page: p.ptr(0, span),
                stride: doorbell_stride,
                sq_fd,
                cq_fd,
            },
            _ => ring::Ring::Mmio,
        });
        bench::run(eng, &mem, &mut q, &params)
    });
    let o = r.map_err(|m| raise(py, |x| &x.state, format!("benchmark failed: {m}")))?;
    let d = PyDict::new(py);
    d.set_item("ios", o.ios)?;
    d.set_item("errors", o.errors)?;
    d.set_item("seconds", o.seconds)?;
    d.set_item("iops", o.ios as f64 / o.seconds.max(1e-9))?;
    d.set_item("mean_ns", o.mean_ns)?;
    d.set_item("p50_ns", o.p50_ns)?;
    d.set_item("p99_ns", o.p99_ns)?;
    d.set_item("interrupts", o.interrupts)?;
    d.set_item("doorbells", o.doorbells)?;
    d.set_item("mmio_doorbells", o.mmio_doorbells)?;
    d.set_item("eventfd_doorbells", o.eventfd_doorbells)?;
    Ok(d)
}

/// Mean round trip in ns of two threads bouncing one eventfd each way.
#[pyfunction]
#[pyo3(signature = (iterations, max_seconds=2.0))]
fn floor_eventfd_pingpong(py: Python<'_>, iterations: u32, max_seconds: f64) -> f64 {
    py.detach(|| floor::eventfd_pingpong(iterations, max_seconds))
}

/// Mean round trip in ns of two threads bouncing a shared-memory flag.
#[pyfunction]
#[pyo3(signature = (iterations, max_seconds=2.0))]
fn floor_shm_pingpong(py: Python<'_>, iterations: u32, max_seconds: f64) -> f64 {
    py.detach(|| floor::shm_pingpong(iterations, max_seconds))
}

/// Random 4 KiB memcpys per second out of a buffer of `buffer_bytes`.
#[pyfunction]
fn floor_memcpy_4k(py: Python<'_>, buffer_bytes: usize, seconds: f64) -> f64 {
    py.detach(|| floor::memcpy_4k(buffer_bytes, seconds))
}

/// Mean ns per interrupt delivery through one kind of notifier.
#[pyfunction]
#[pyo3(signature = (kind, target, iterations, max_seconds=1.0, address=0, data=0))]
fn measure_irq_delivery(
    py: Python<'_>,
    kind: &str,
    target: Bound<'_, PyAny>,
    iterations: u32,
    max_seconds: f64,
    address: u64,
    data: u32,
) -> PyResult<f64> {
    let notifier = match kind {
        "eventfd" | "kvm_msi" => {
            let fd: i32 = target.extract()?;
            let owned = dup_fd(fd).map_err(|e| raise(py, |x| &x.vector, e.to_string()))?;
            if kind == "eventfd" {
                Notifier::Eventfd(owned)
            } else {
                Notifier::KvmMsi(owned)
            }
        }
        "callback" => {
            let cb = target.unbind();
            Notifier::Callback(Arc::new(move |v: u32| {
                lifecycle::call_python(|py| {
                    if let Err(e) = lifecycle::call(cb.bind(py), (v,)) {
                        e.print(py);
                    }
                });
            }))
        }
        other => {
            return Err(config_err(
                py,
                format!("kind {other:?} must be \"eventfd\", \"kvm_msi\" or \"callback\""),
            ))
        }
    };
    // Detached, as the worker is: a callback re-attaches per delivery.
    Ok(py.detach(|| irqcost::notify_cost(notifier, address, data, iterations, max_seconds)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let e = exceptions(py)?;
    m.add("NvmeFastError", e.base.bind(py))?;
    m.add("ConfigError", e.config.bind(py))?;
    m.add("DmaMapError", e.dma.bind(py))?;
    m.add("RegisterAccessError", e.register.bind(py))?;
    m.add("VectorError", e.vector.bind(py))?;
    m.add("QueueError", e.queue.bind(py))?;
    m.add("StateError", e.state.bind(py))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyEngine>()?;
    m.add_function(wrap_pyfunction!(bench_io, m)?)?;
    m.add_function(wrap_pyfunction!(floor_eventfd_pingpong, m)?)?;
    m.add_function(wrap_pyfunction!(floor_shm_pingpong, m)?)?;
    m.add_function(wrap_pyfunction!(floor_memcpy_4k, m)?)?;
    m.add_function(wrap_pyfunction!(measure_irq_delivery, m)?)?;
    lifecycle::install_exit_hook(m)?;
    Ok(())
}
